"""Command-line front ends: ``denoise`` and ``audiodenoise``. No DSP here."""
