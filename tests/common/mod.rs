//! A throw-away repository for CLI tests: the real catalogue spec of bet 14
//! (the cheapest real bet), an empty ledger, a private HOME (so the signing
//! key is the test's own) and a private cache.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct TestRepo {
    pub dir: tempfile::TempDir,
}

/// The bet the CLI tests run.
pub const SPEC: &str = "bets/14_royalty_math.toml";

impl TestRepo {
    /// A repo with bet 14's spec copied from the catalogue.
    pub fn new() -> TestRepo {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bets/keys")).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(SPEC);
        std::fs::copy(src, dir.path().join(SPEC)).unwrap();
        TestRepo { dir }
    }

    /// Copy another catalogue spec (e.g. `bets/15_gossip_directory.toml`) into the repo.
    pub fn add_spec(&self, rel: &str) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        std::fs::copy(src, self.path(rel)).unwrap();
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The `bets` binary with this repo, HOME and cache.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bets"));
        c.arg("--repo").arg(self.dir.path()).arg("--quiet").args(args);
        c.env("HOME", self.path("home"))
            .env("BETS_HOME", self.path("cache"))
            .env_remove("BETS_KEY")
            .env_remove("BETS_REPO")
            .env_remove("RUST_LOG");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Run and insist on exit 0.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "bets {args:?} failed:\n{}\n{}", stdout(&out), stderr(&out));
        stdout(&out)
    }

    /// Register and run the tiny profile; returns the bundle folder.
    pub fn registered_run(&self) -> PathBuf {
        self.ok(&["register", SPEC]);
        self.run_tiny(&[])
    }

    /// Run the tiny profile with extra args; returns the bundle folder.
    pub fn run_tiny(&self, extra: &[&str]) -> PathBuf {
        let mut args = vec!["run", SPEC, "--profile", "tiny"];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        let line = out.lines().find(|l| l.starts_with("bundle: ")).expect("run prints its bundle");
        self.path(line.trim_start_matches("bundle: "))
    }
}

impl TestRepo {
    /// Cut the last `n` lines off the ledger (a tampering step).
    pub fn drop_last_ledger_lines(&self, n: usize) {
        let path = self.path("bets/ledger.jsonl");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let kept: String = lines[..lines.len() - n].iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, kept).unwrap();
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}
