//! Side-by-side speed benchmark against a PyTorch reference (filled in below).
