//! What the binary writes to stderr: the log filter, whether to colour, and how an error is
//! printed.

use std::io::IsTerminal;

/// Logs when RUST_LOG is unset: Tributary at info; libraries only on errors (delta-kernel logs an
/// expected "no files in log segment" error while probing a new table, so it stays off).
pub const DEFAULT_FILTER: &str =
    "warn,tributary=info,deltalake_core=error,buoyant_kernel=off,delta_kernel=off,pg_walstream=error";

/// The log filter for a `RUST_LOG` value. A bare level that shows more than the default
/// (`RUST_LOG=debug`, `trace`, `info`, `warn`) applies to Tributary only, the libraries staying
/// at [`DEFAULT_FILTER`]'s levels (a global `debug` gives thousands of lines of dependency
/// internals per run); `error` and `off` quiet everything; anything else (`tributary=trace`,
/// `debug,deltalake_core=info`) is taken as `tracing_subscriber`'s `EnvFilter` directives, as
/// given. Unset or empty: [`DEFAULT_FILTER`].
pub fn filter(rust_log: Option<&str>) -> String {
    let Some(value) = rust_log.map(str::trim).filter(|v| !v.is_empty()) else {
        return DEFAULT_FILTER.to_string();
    };
    let bare = ["trace", "debug", "info", "warn", "error", "off"]
        .iter()
        .find(|level| value.eq_ignore_ascii_case(level));
    match bare {
        Some(&"off") => "off".to_string(),
        // delta-kernel's expected "no files in log segment" error stays hidden.
        Some(&"error") => "error,buoyant_kernel=off,delta_kernel=off".to_string(),
        Some(level) => DEFAULT_FILTER.replacen("tributary=info", &format!("tributary={level}"), 1),
        None => value.to_string(),
    }
}

/// Whether log lines are coloured: only when stderr is a terminal and `NO_COLOR` is unset or
/// empty (<https://no-color.org>).
pub fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// An error as printed on stderr: `error: <message>`, then each cause in its chain that the text
/// so far does not already say (`caused by: ...`), one per line. Errors that show their source
/// in their own message (a config's YAML error) are printed once.
pub fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("error: {err}\n");
    let mut source = err.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(&format!("  caused by: {said}\n"));
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn a_bare_level_is_scoped_to_tributary() {
        assert_eq!(filter(None), DEFAULT_FILTER);
        assert_eq!(filter(Some(" ")), DEFAULT_FILTER);
        let debug = filter(Some("debug"));
        assert!(debug.starts_with("warn,tributary=debug,"), "{debug}");
        assert!(debug.contains("deltalake_core=error"), "{debug}");
        assert_eq!(filter(Some("DEBUG")), debug);
        assert_eq!(filter(Some("off")), "off");
        assert!(filter(Some("error")).starts_with("error,"));
        assert_eq!(filter(Some("tributary=trace")), "tributary=trace");
        assert_eq!(
            filter(Some("debug,deltalake_core=info")),
            "debug,deltalake_core=info"
        );
    }

    #[test]
    fn a_cause_the_message_already_says_is_not_repeated() {
        let yaml = serde_yaml::from_str::<Vec<u8>>("[").unwrap_err();
        let err = Error::ConfigParse {
            path: "c.yaml".into(),
            source: yaml,
        };
        let text = error_text(&err);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with("error: config c.yaml: "), "{text}");
        // A cause the message does not say is printed.
        let delta = Error::Storage {
            action: "cannot write".into(),
            path: "/x".into(),
            source: std::io::Error::other(Wrapped),
        };
        let text = error_text(&delta);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("  caused by: the inner cause"), "{text}");
    }

    #[derive(Debug)]
    struct Wrapped;
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the outer cause")
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&Inner)
        }
    }
    #[derive(Debug)]
    struct Inner;
    impl std::fmt::Display for Inner {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the inner cause")
        }
    }
    impl std::error::Error for Inner {}
}
