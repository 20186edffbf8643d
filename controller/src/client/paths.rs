//! IOS-XE filesystem path rules for gNOI File RPCs.
//!
//! A path is `<prefix>:<rest>` where the prefix is one of the IOS-XE
//! filesystems in [`IOSXE_FILESYSTEM_PREFIXES`]. After the prefix one optional
//! leading `/` is dropped (`flash:/a` and `flash:a` name the same file); the
//! rest must be non-empty, and split on `/` it may contain no empty, `.` or
//! `..` segment and no segment that contains a prefix string (which blocks
//! nested forms such as `flash:/x/bootflash:y`).
//!
//! Which prefixes are allowed depends on the operation, so the allow-list is
//! a parameter: reads ([`READ_PREFIXES`]) accept all eight, writes
//! ([`WRITE_PREFIXES`]) only the five writable filesystems, and software
//! images ([`IMAGE_PREFIXES`]) only `flash:`, `bootflash:` and `harddisk:`.
//!
//! ```
//! use cvk_controller::client::paths::{validate_path, WRITE_PREFIXES};
//! assert!(validate_path("flash:/images/a.bin", WRITE_PREFIXES).is_ok());
//! assert!(validate_path("nvram:startup-config", WRITE_PREFIXES).is_err());
//! assert!(validate_path("flash:../etc", WRITE_PREFIXES).is_err());
//! ```

use std::fmt;

/// The eight IOS-XE filesystem prefixes the gNOI client knows.
pub const IOSXE_FILESYSTEM_PREFIXES: &[&str] = &[
    "flash:",
    "bootflash:",
    "harddisk:",
    "usbflash0:",
    "usbflash1:",
    "crashinfo:",
    "nvram:",
    "webui:",
];

/// Prefixes accepted by read-only RPCs (File.Get, File.Stat).
pub const READ_PREFIXES: &[&str] = IOSXE_FILESYSTEM_PREFIXES;

/// Prefixes accepted by File.Put and File.Remove.
pub const WRITE_PREFIXES: &[&str] = &[
    "flash:",
    "bootflash:",
    "harddisk:",
    "usbflash0:",
    "usbflash1:",
];

/// Prefixes accepted for software images (`localPath`, `deviceFile.path`).
pub const IMAGE_PREFIXES: &[&str] = &["flash:", "bootflash:", "harddisk:"];

/// Why a path was refused. Every variant carries the offending path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is the empty string.
    #[error("file path is empty; expected <filesystem>:<path>, e.g. flash:/image.bin")]
    Empty,
    /// The path does not start with an allowed filesystem prefix.
    #[error("file path {path:?} must start with one of {allowed}")]
    PrefixNotAllowed {
        /// The path as given.
        path: String,
        /// The allowed prefixes, comma-separated.
        allowed: String,
    },
    /// Nothing (or only `/`) follows the prefix.
    #[error("file path {path:?} names no file after the filesystem prefix")]
    NoFileName {
        /// The path as given.
        path: String,
    },
    /// A segment is empty (`//` or a trailing `/`).
    #[error("file path {path:?} has an empty segment (\"//\" or a trailing \"/\")")]
    EmptySegment {
        /// The path as given.
        path: String,
    },
    /// A segment is `.` or `..`.
    #[error("file path {path:?} has a {segment:?} segment; relative segments are not allowed")]
    RelativeSegment {
        /// The path as given.
        path: String,
        /// `.` or `..`.
        segment: String,
    },
    /// A segment contains a filesystem prefix (a nested path).
    #[error(
        "file path {path:?} has segment {segment:?} that contains the filesystem prefix {prefix:?}"
    )]
    NestedPrefix {
        /// The path as given.
        path: String,
        /// The offending segment.
        segment: String,
        /// The prefix found inside it.
        prefix: String,
    },
}

/// A path that passed [`validate_path`]; `Display` gives it back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DevicePath {
    full: String,
    prefix_len: usize,
}

impl DevicePath {
    /// The path as the device receives it.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The filesystem prefix including the colon, e.g. `flash:`.
    pub fn filesystem(&self) -> &str {
        &self.full[..self.prefix_len]
    }

    /// The part after the prefix, without the optional leading `/`.
    pub fn relative(&self) -> &str {
        let rest = &self.full[self.prefix_len..];
        rest.strip_prefix('/').unwrap_or(rest)
    }
}

impl fmt::Display for DevicePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// Checks `path` against the rules of this module with the `allowed`
/// prefixes (each including its colon, e.g. `"flash:"`).
pub fn validate_path(path: &str, allowed: &[&str]) -> Result<DevicePath, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    let Some(prefix) = allowed.iter().find(|p| path.starts_with(**p)) else {
        return Err(PathError::PrefixNotAllowed {
            path: path.to_owned(),
            allowed: allowed.join(", "),
        });
    };
    let rest = &path[prefix.len()..];
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(PathError::NoFileName {
            path: path.to_owned(),
        });
    }
    for segment in rest.split('/') {
        if segment.is_empty() {
            return Err(PathError::EmptySegment {
                path: path.to_owned(),
            });
        }
        if segment == "." || segment == ".." {
            return Err(PathError::RelativeSegment {
                path: path.to_owned(),
                segment: segment.to_owned(),
            });
        }
        // Every known prefix counts here, not just the allowed ones: a
        // segment like `nvram:x` is a nested path whatever the operation.
        // The longest match is named (`bootflash:y` also contains `flash:`).
        if let Some(nested) = IOSXE_FILESYSTEM_PREFIXES
            .iter()
            .filter(|p| segment.contains(**p))
            .max_by_key(|p| p.len())
        {
            return Err(PathError::NestedPrefix {
                path: path.to_owned(),
                segment: segment.to_owned(),
                prefix: (*nested).to_owned(),
            });
        }
    }
    Ok(DevicePath {
        full: path.to_owned(),
        prefix_len: prefix.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepted_paths() {
        for (path, allowed, fs, rel) in [
            ("flash:image.bin", READ_PREFIXES, "flash:", "image.bin"),
            ("flash:/image.bin", READ_PREFIXES, "flash:", "image.bin"),
            (
                "bootflash:/a/b/c.txt",
                WRITE_PREFIXES,
                "bootflash:",
                "a/b/c.txt",
            ),
            ("harddisk:x", IMAGE_PREFIXES, "harddisk:", "x"),
            (
                "usbflash0:/dir/file",
                WRITE_PREFIXES,
                "usbflash0:",
                "dir/file",
            ),
            ("usbflash1:f", WRITE_PREFIXES, "usbflash1:", "f"),
            (
                "crashinfo:/tracelogs/x.gz",
                READ_PREFIXES,
                "crashinfo:",
                "tracelogs/x.gz",
            ),
            (
                "nvram:startup-config",
                READ_PREFIXES,
                "nvram:",
                "startup-config",
            ),
            ("webui:/index.html", READ_PREFIXES, "webui:", "index.html"),
            ("flash:...", READ_PREFIXES, "flash:", "..."),
            (
                "flash:a..b/.hidden",
                READ_PREFIXES,
                "flash:",
                "a..b/.hidden",
            ),
        ] {
            let p = validate_path(path, allowed).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(p.as_str(), path);
            assert_eq!(p.filesystem(), fs, "{path}");
            assert_eq!(p.relative(), rel, "{path}");
        }
    }

    #[test]
    fn refused_paths() {
        for (path, allowed, want) in [
            ("", READ_PREFIXES, PathError::Empty),
            (
                "/etc/passwd",
                READ_PREFIXES,
                PathError::PrefixNotAllowed {
                    path: "/etc/passwd".into(),
                    allowed: READ_PREFIXES.join(", "),
                },
            ),
            (
                "nvram:startup-config",
                WRITE_PREFIXES,
                PathError::PrefixNotAllowed {
                    path: "nvram:startup-config".into(),
                    allowed: WRITE_PREFIXES.join(", "),
                },
            ),
            (
                "usbflash0:img.bin",
                IMAGE_PREFIXES,
                PathError::PrefixNotAllowed {
                    path: "usbflash0:img.bin".into(),
                    allowed: IMAGE_PREFIXES.join(", "),
                },
            ),
            (
                "FLASH:x",
                READ_PREFIXES,
                PathError::PrefixNotAllowed {
                    path: "FLASH:x".into(),
                    allowed: READ_PREFIXES.join(", "),
                },
            ),
            (
                "flash:",
                READ_PREFIXES,
                PathError::NoFileName {
                    path: "flash:".into(),
                },
            ),
            (
                "flash:/",
                READ_PREFIXES,
                PathError::NoFileName {
                    path: "flash:/".into(),
                },
            ),
            (
                "flash://x",
                READ_PREFIXES,
                PathError::EmptySegment {
                    path: "flash://x".into(),
                },
            ),
            (
                "flash:a//b",
                READ_PREFIXES,
                PathError::EmptySegment {
                    path: "flash:a//b".into(),
                },
            ),
            (
                "flash:a/",
                READ_PREFIXES,
                PathError::EmptySegment {
                    path: "flash:a/".into(),
                },
            ),
            (
                "flash:..",
                READ_PREFIXES,
                PathError::RelativeSegment {
                    path: "flash:..".into(),
                    segment: "..".into(),
                },
            ),
            (
                "flash:/a/../b",
                READ_PREFIXES,
                PathError::RelativeSegment {
                    path: "flash:/a/../b".into(),
                    segment: "..".into(),
                },
            ),
            (
                "flash:./a",
                READ_PREFIXES,
                PathError::RelativeSegment {
                    path: "flash:./a".into(),
                    segment: ".".into(),
                },
            ),
            (
                "flash:/x/bootflash:y",
                READ_PREFIXES,
                PathError::NestedPrefix {
                    path: "flash:/x/bootflash:y".into(),
                    segment: "bootflash:y".into(),
                    prefix: "bootflash:".into(),
                },
            ),
            (
                "flash:nvram:x",
                WRITE_PREFIXES,
                PathError::NestedPrefix {
                    path: "flash:nvram:x".into(),
                    segment: "nvram:x".into(),
                    prefix: "nvram:".into(),
                },
            ),
            (
                "flash:/flash:",
                READ_PREFIXES,
                PathError::NestedPrefix {
                    path: "flash:/flash:".into(),
                    segment: "flash:".into(),
                    prefix: "flash:".into(),
                },
            ),
        ] {
            assert_eq!(validate_path(path, allowed), Err(want), "{path:?}");
        }
    }

    #[test]
    fn messages_name_the_path_and_the_rule() {
        let e = validate_path("flash:/a/../b", READ_PREFIXES)
            .unwrap_err()
            .to_string();
        assert!(e.contains("flash:/a/../b") && e.contains("\"..\""), "{e}");
        let e = validate_path("nvram:x", WRITE_PREFIXES)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nvram:x") && e.contains("flash:, bootflash:"),
            "{e}"
        );
        let e = validate_path("flash:/x/bootflash:y", READ_PREFIXES)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bootflash:y") && e.contains("\"bootflash:\""),
            "{e}"
        );
    }

    /// The three allow-lists the client uses.
    fn allow_list() -> impl Strategy<Value = &'static [&'static str]> {
        prop::sample::select(vec![READ_PREFIXES, WRITE_PREFIXES, IMAGE_PREFIXES])
    }

    /// A plain file-name segment: no `/`, never `.` or `..`, no colon (so
    /// no prefix can hide in it).
    fn segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._~-]{1,10}".prop_filter("relative segment", |s| s != "." && s != "..")
    }

    /// Checks every promise of [`validate_path`] on one input: an accepted
    /// path satisfies all the rules, a refused one says why and names it.
    fn check(path: &str, allowed: &[&str]) -> Result<(), TestCaseError> {
        match validate_path(path, allowed) {
            Ok(p) => {
                prop_assert_eq!(p.as_str(), path);
                prop_assert_eq!(p.to_string(), path);
                prop_assert!(allowed.contains(&p.filesystem()), "{path:?}");
                prop_assert_eq!(
                    format!("{}{}", p.filesystem(), &path[p.filesystem().len()..]),
                    path
                );
                prop_assert!(!p.relative().is_empty());
                for seg in p.relative().split('/') {
                    prop_assert!(!seg.is_empty() && seg != "." && seg != "..", "{path:?}");
                    for fs in IOSXE_FILESYSTEM_PREFIXES {
                        prop_assert!(!seg.contains(fs), "{path:?} hides {fs}");
                    }
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if path.is_empty() {
                    prop_assert_eq!(&e, &PathError::Empty);
                } else {
                    // Every refusal of a non-empty path quotes it.
                    prop_assert!(msg.contains(&format!("{path:?}")), "{msg}");
                }
                if let PathError::PrefixNotAllowed { .. } = e {
                    prop_assert!(!allowed.iter().any(|p| path.starts_with(p)));
                    prop_assert!(msg.contains(&allowed.join(", ")), "{msg}");
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_text_is_accepted_only_when_every_rule_holds(path in any::<String>(), allowed in allow_list()) {
            check(&path, allowed)?;
        }

        #[test]
        fn path_like_text_is_accepted_only_when_every_rule_holds(
            fs in prop::sample::select(IOSXE_FILESYSTEM_PREFIXES.to_vec()),
            rest in "[a-z0-9./:]{0,16}",
            allowed in allow_list(),
        ) {
            check(&format!("{fs}{rest}"), allowed)?;
        }

        #[test]
        fn well_formed_paths_are_accepted(
            allowed in allow_list(),
            pick in any::<prop::sample::Index>(),
            slash in any::<bool>(),
            segs in prop::collection::vec(segment(), 1..5),
        ) {
            let fs = allowed[pick.index(allowed.len())];
            let rel = segs.join("/");
            let path = format!("{fs}{}{rel}", if slash { "/" } else { "" });
            let p = validate_path(&path, allowed).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(p.filesystem(), fs);
            prop_assert_eq!(p.relative(), rel);
        }

        #[test]
        fn a_relative_or_nested_segment_anywhere_is_refused(
            fs in prop::sample::select(READ_PREFIXES.to_vec()),
            segs in prop::collection::vec(segment(), 0..4),
            at in any::<prop::sample::Index>(),
            bad in prop::sample::select(vec![".", "..", "", "nvram:x", "a/bootflash:"]),
        ) {
            let mut segs = segs;
            let i = at.index(segs.len() + 1);
            segs.insert(i, bad.to_owned());
            let path = format!("{fs}/{}", segs.join("/"));
            let e = validate_path(&path, READ_PREFIXES)
                .err()
                .ok_or_else(|| TestCaseError::fail(format!("{path:?} accepted")))?;
            prop_assert!(e.to_string().contains(&format!("{path:?}")), "{e}");
        }
    }
}
