//! Command-line interface (clap derive only; handlers live in `app`).
