"""The shipped model (installed as the package data ``audiodenoise.pretrained``)."""
