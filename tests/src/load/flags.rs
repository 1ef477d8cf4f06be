//! The command line of the load generator binaries: a mode word, then
//! `--name value` pairs. Tiny on purpose (the binaries are std + this
//! crate); every mistake ends the process with the usage text, exit 2.

use std::collections::BTreeMap;
use std::str::FromStr;

/// A parsed `MODE --name value ...` command line.
#[derive(Debug)]
pub struct Flags {
    program: &'static str,
    usage: &'static str,
    pub mode: String,
    values: BTreeMap<String, String>,
}

impl Flags {
    /// Parses `std::env::args()`; `usage` is printed on any mistake.
    pub fn from_env(program: &'static str, usage: &'static str) -> Flags {
        Flags::parse(program, usage, std::env::args().skip(1))
    }

    pub fn parse(
        program: &'static str,
        usage: &'static str,
        args: impl IntoIterator<Item = String>,
    ) -> Flags {
        let mut args = args.into_iter();
        let mut flags = Flags { program, usage, mode: String::new(), values: BTreeMap::new() };
        flags.mode = args.next().unwrap_or_else(|| flags.fail_usage("a mode is required"));
        while let Some(arg) = args.next() {
            let Some(name) = arg.strip_prefix("--") else {
                flags.fail_usage(&format!("unexpected argument {arg:?}"));
            };
            let value = args.next().unwrap_or_else(|| flags.fail_usage(&format!("--{name} needs a value")));
            flags.values.insert(name.to_string(), value);
        }
        flags
    }

    /// The value of `--name`, parsed; `default` when absent.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> T
    where
        T::Err: std::fmt::Display,
    {
        match self.values.get(name) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|e| self.fail_usage(&format!("--{name} {v:?}: {e}"))),
        }
    }

    /// The value of `--name`, parsed, if given.
    pub fn optional<T: FromStr>(&self, name: &str) -> Option<T>
    where
        T::Err: std::fmt::Display,
    {
        self.values.contains_key(name).then(|| self.require(name))
    }

    /// The value of `--name`, parsed; the process ends if it is absent.
    pub fn require<T: FromStr>(&self, name: &str) -> T
    where
        T::Err: std::fmt::Display,
    {
        let v = self.values.get(name).unwrap_or_else(|| self.fail_usage(&format!("--{name} is required")));
        v.parse().unwrap_or_else(|e| self.fail_usage(&format!("--{name} {v:?}: {e}")))
    }

    /// Ends the process with `msg` and the usage text (exit 2).
    pub fn fail_usage(&self, msg: &str) -> ! {
        eprintln!("{}: {msg}\n{}", self.program, self.usage);
        std::process::exit(2)
    }

    /// Ends the process with `msg` (exit 1).
    pub fn fail(&self, msg: &str) -> ! {
        eprintln!("{}: {msg}", self.program);
        std::process::exit(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_and_values() {
        let args = ["run", "--secs", "2.5", "--connect", "1.2.3.4:80"].map(String::from);
        let f = Flags::parse("t", "usage", args);
        assert_eq!(f.mode, "run");
        assert_eq!(f.get("secs", 10.0), 2.5);
        assert_eq!(f.get("workers", 8usize), 8);
        assert_eq!(f.optional::<usize>("cpu"), None);
        assert_eq!(f.require::<std::net::SocketAddr>("connect").port(), 80);
    }
}
