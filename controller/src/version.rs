//! IOS-XE version strings and the prefix-aware match of the specification.
//!
//! Operators write short forms (`26.01.01`, `17.15.01a`) in `targetVersion`;
//! devices report the image's full build string over gNOI
//! (`26.01.01.0.340`, `17.18.02.0.4112.1766116039`). The rule:
//!
//! > a reported version `R` matches a target `T` when `R == T`, or when `R`
//! > starts with `T` followed by a dot.
//!
//! So the comparison happens on dot boundaries: `26.01.01` matches
//! `26.01.01.0.340` but not `26.01.010`, and `17.15.01` does not match
//! `17.15.01a` (the rebuild letter is part of the last component). Both sides
//! are compared as written: no zero padding is added or removed, because
//! `17.9.5` and `17.09.05` are different strings on the wire and guessing
//! would hide a typo.

use std::fmt;

/// Longest accepted version string (the CRD enforces the same bound).
pub const MAX_LEN: usize = 128;

/// Why a string is not an IOS-XE version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Nothing to parse.
    #[error("version is empty")]
    Empty,
    /// Longer than [`MAX_LEN`].
    #[error("version is {0} characters long; at most {MAX_LEN} are allowed")]
    TooLong(usize),
    /// Does not have the `N.N[.N...][letter]` shape.
    #[error(
        "'{0}' is not an IOS-XE version: expected dot-separated numbers with an optional \
         lowercase rebuild letter at the end, such as 17.15.01a, 26.01.01 or 26.01.01.0.340"
    )]
    Shape(String),
}

/// A validated target version (the CRD pattern `^[0-9]+(\.[0-9]+)+([a-z])?$`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetVersion(String);

impl TargetVersion {
    /// Validates `s` against the target-version shape.
    pub fn parse(s: &str) -> Result<Self, VersionError> {
        if s.is_empty() {
            return Err(VersionError::Empty);
        }
        if s.len() > MAX_LEN {
            return Err(VersionError::TooLong(s.len()));
        }
        let (body, letter) = match s.as_bytes()[s.len() - 1] {
            b'a'..=b'z' => (&s[..s.len() - 1], true),
            _ => (s, false),
        };
        let parts: Vec<&str> = body.split('.').collect();
        let digits_only = parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if parts.len() < 2 || !digits_only || (letter && body.is_empty()) {
            return Err(VersionError::Shape(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the device-reported `reported` version satisfies this target.
    pub fn matches(&self, reported: &str) -> bool {
        version_matches(&self.0, reported)
    }
}

impl fmt::Display for TargetVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The prefix-aware match: `reported == target`, or `reported` starts with
/// `target` immediately followed by `.`. An empty target matches nothing.
pub fn version_matches(target: &str, reported: &str) -> bool {
    let (target, reported) = (target.trim(), reported.trim());
    if target.is_empty() {
        return false;
    }
    match reported.strip_prefix(target) {
        Some("") => true,
        Some(rest) => rest.starts_with('.'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples_from_the_specification() {
        assert!(version_matches("26.01.01", "26.01.01.0.340"));
        assert!(version_matches("26.01.01", "26.01.01.0.340.1766116039"));
        assert!(version_matches("26.01.01", "26.01.01"));
        assert!(!version_matches("26.01.01", "26.01.010"));
        assert!(!version_matches("17.15.01", "17.15.01a"));
        assert!(version_matches("17.15.01a", "17.15.01a"));
        assert!(version_matches(
            "17.18.02.0.4112.1766116039",
            "17.18.02.0.4112.1766116039"
        ));
        assert!(!version_matches("17.18.02", "17.18.03.0.4112.1766116039"));
        assert!(!version_matches("26.01.01.0.340", "26.01.01"));
        assert!(!version_matches("", "26.01.01"));
    }

    #[test]
    fn target_shapes() {
        for ok in [
            "17.15.01a",
            "26.01.01",
            "26.01.01.0.340",
            "17.18.02.0.4112.1766116039",
            "1.0",
        ] {
            TargetVersion::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "", "17", "17.", ".17.1", "17..1", "17.1A", "v17.1", "17.1-a", "17.1ab", "a", "17.a",
        ] {
            assert!(TargetVersion::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = "1.".repeat(70) + "1";
        assert_eq!(
            TargetVersion::parse(&long),
            Err(VersionError::TooLong(long.len()))
        );
    }

    fn component() -> impl Strategy<Value = String> {
        "[0-9]{1,4}"
    }

    fn version() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(component(), 2..6),
            prop::option::of("[a-z]"),
        )
            .prop_map(|(parts, letter)| parts.join(".") + letter.as_deref().unwrap_or(""))
    }

    proptest! {
        #[test]
        fn a_version_matches_itself(v in version()) {
            prop_assert!(version_matches(&v, &v));
            prop_assert!(TargetVersion::parse(&v).is_ok());
        }

        #[test]
        fn extending_on_a_dot_boundary_matches(v in version(), ext in prop::collection::vec(component(), 1..4)) {
            let reported = format!("{v}.{}", ext.join("."));
            prop_assert!(version_matches(&v, &reported));
        }

        #[test]
        fn extending_inside_a_component_never_matches(v in version(), tail in "[0-9a-z]{1,3}") {
            // Appending characters to the last component (digits or a letter)
            // makes a different version, never a refinement of `v`.
            let reported = format!("{v}{tail}");
            prop_assert!(!version_matches(&v, &reported));
        }

        #[test]
        fn a_longer_target_never_matches_a_shorter_report(v in version(), ext in component()) {
            let target = format!("{v}.{ext}");
            prop_assert!(!version_matches(&target, &v));
        }

        #[test]
        fn match_implies_same_leading_components(t in version(), r in version()) {
            if version_matches(&t, &r) {
                let tp: Vec<&str> = t.split('.').collect();
                let rp: Vec<&str> = r.split('.').collect();
                prop_assert!(rp.len() >= tp.len());
                prop_assert_eq!(&rp[..tp.len()], &tp[..]);
            }
        }
    }

    /// The CRD's pattern, as the API server applies it: the oracle for
    /// [`TargetVersion::parse`].
    fn crd_pattern() -> regex::Regex {
        regex::Regex::new(r"^[0-9]+(\.[0-9]+)+([a-z])?$").unwrap()
    }

    /// Checks `parse(s)` against the CRD pattern and the length bound, and
    /// that a refusal names the rule broken (and the input, when it fits).
    fn check_parse(s: &str) -> Result<(), TestCaseError> {
        let want = crd_pattern().is_match(s) && s.len() <= MAX_LEN;
        match TargetVersion::parse(s) {
            Ok(v) => {
                prop_assert!(want, "{s:?} accepted but does not match the CRD pattern");
                prop_assert_eq!(v.as_str(), s);
                prop_assert_eq!(v.to_string(), s);
            }
            Err(e) => {
                prop_assert!(!want, "{s:?} matches the CRD pattern but was refused: {e}");
                let msg = e.to_string();
                match e {
                    VersionError::Empty => prop_assert!(s.is_empty()),
                    VersionError::TooLong(n) => {
                        prop_assert_eq!(n, s.len());
                        prop_assert!(msg.contains(&MAX_LEN.to_string()), "{msg}");
                    }
                    VersionError::Shape(ref got) => {
                        prop_assert_eq!(got, s);
                        prop_assert!(msg.contains(s) && msg.contains("dot-separated"), "{msg}");
                    }
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_agrees_with_the_crd_pattern_on_near_misses(s in "[0-9a-zA-Z. _-]{0,14}") {
            check_parse(&s)?;
        }

        #[test]
        fn parse_agrees_with_the_crd_pattern_on_version_like_text(
            s in "[0-9]{0,3}(\\.[0-9]{0,3}){0,5}[a-zA-Z.]{0,2}"
        ) {
            check_parse(&s)?;
        }

        #[test]
        fn parse_never_panics_on_any_text(s in any::<String>()) {
            check_parse(&s)?;
        }

        #[test]
        fn the_length_bound_is_exact(n in (MAX_LEN - 4)..(MAX_LEN + 4)) {
            // "1.1111..." of exactly n characters: valid shape, so only the
            // length decides.
            let s = format!("1.{}", "1".repeat(n - 2));
            prop_assert_eq!(TargetVersion::parse(&s).is_ok(), n <= MAX_LEN);
            check_parse(&s)?;
        }

        #[test]
        fn matching_any_text_never_panics_and_ignores_outer_whitespace(
            t in any::<String>(),
            r in any::<String>(),
            pad in "[ \t\n]{0,3}",
        ) {
            let plain = version_matches(&t, &r);
            prop_assert_eq!(version_matches(&format!("{pad}{t}{pad}"), &format!("{pad}{r}")), plain);
            if t.trim().is_empty() {
                prop_assert!(!plain);
            }
        }
    }
}
