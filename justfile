# Everyday recipes; each is a plain cargo command too (just is optional).

# Run a real bet end to end at the default profile.
demo:
    cargo run -- run bets/46_norm_replication.toml -j 2

# The test suite (what CI runs, with fmt, clippy and verify: see .ci/run).
test:
    cargo test --workspace

# Everything CI runs.
ci:
    bash .ci/run

# Validate every spec.
check:
    cargo run -- check

# Verify the ledger and every committed bundle.
verify:
    cargo run -- verify

# Every bet's registration, runs and last verdict.
status:
    cargo run -- status

# Regenerate reports/ (summary, per-bet pages, HTML) from the signed bundles.
report:
    cargo run -- report

# Rerun every published bet at tiny and compare with its CI baseline.
regress:
    cargo run -- regress
