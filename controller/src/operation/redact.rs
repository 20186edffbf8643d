//! Removes secrets from IOS-XE text before it lands in status or a
//! ConfigMap.
//!
//! DeviceOperation is the low-trust surface: whoever may read the object
//! may read its output, and a GNOIFileGet of `nvram:startup-config` carries
//! passwords, hashed secrets, SNMP communities, shared keys and sometimes
//! private keys. The filter is line based and keyword driven (IOS-XE's
//! configuration grammar is regular enough for that): the value after
//! `password`, `secret`, `key-string`, `pre-shared-key`, `community`, and
//! after `key` where it is a key (`key 7 <v>`, `tacacs-server key <v>`,
//! `crypto isakmp key <v>`), optionally preceded by an encryption-type
//! digit, becomes `<redacted>`; so does every line of a PEM private key
//! block. Lines without a secret keep their exact bytes. It is a best-effort
//! filter for well-known shapes, not a guarantee.

/// What replaces a secret value.
pub const REDACTED: &str = "<redacted>";

fn is_type_digit(t: &str) -> bool {
    t.len() == 1 && t.as_bytes()[0].is_ascii_digit()
}

/// Index of the secret value that follows the keyword at `i`, if any.
fn value_after(tokens: &[&str], i: usize) -> Option<usize> {
    match tokens.get(i + 1) {
        Some(t) if is_type_digit(t) && tokens.len() > i + 2 => Some(i + 2),
        Some(_) => Some(i + 1),
        None => None,
    }
}

fn secret_positions(tokens: &[&str]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let lower = t.to_ascii_lowercase();
        let is_key = match lower.as_str() {
            "password" | "secret" | "key-string" | "pre-shared-key" | "community" => true,
            "key" => {
                let prev = i.checked_sub(1).map(|p| tokens[p].to_ascii_lowercase());
                let next_is_type =
                    tokens.get(i + 1).is_some_and(|n| is_type_digit(n)) && tokens.len() > i + 2;
                next_is_type
                    || prev.as_deref().is_some_and(|p| {
                        p.ends_with("-server") || p == "isakmp" || p == "server-key"
                    })
            }
            _ => false,
        };
        if is_key && let Some(v) = value_after(tokens, i) {
            out.push(v);
        }
    }
    out
}

/// Redacts `text`; returns the result and whether anything was removed.
pub fn redact(text: &str) -> (String, bool) {
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut in_private_key = false;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let ending = &line[body.len()..];
        if in_private_key {
            if body.contains("-----END") && body.contains("PRIVATE KEY-----") {
                in_private_key = false;
                out.push_str(line);
            } else {
                out.push_str(REDACTED);
                out.push_str(ending);
                changed = true;
            }
            continue;
        }
        if body.contains("-----BEGIN") && body.contains("PRIVATE KEY-----") {
            in_private_key = true;
            out.push_str(line);
            continue;
        }
        let tokens: Vec<&str> = body.split_whitespace().collect();
        let secrets = secret_positions(&tokens);
        if secrets.is_empty() {
            out.push_str(line);
            continue;
        }
        changed = true;
        let indent = &body[..body.len() - body.trim_start().len()];
        out.push_str(indent);
        let redacted: Vec<&str> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| if secrets.contains(&i) { REDACTED } else { *t })
            .collect();
        out.push_str(&redacted.join(" "));
        out.push_str(ending);
    }
    (out, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_secret_shapes() {
        for (line, want) in [
            ("enable secret 9 $9$abc$def", "enable secret 9 <redacted>"),
            ("enable password cisco", "enable password <redacted>"),
            (
                "username admin privilege 15 secret 9 $9$x",
                "username admin privilege 15 secret 9 <redacted>",
            ),
            (
                "username cvk password 0 plain",
                "username cvk password 0 <redacted>",
            ),
            (" password 7 0822455D0A16", " password 7 <redacted>"),
            (
                "snmp-server community public RO",
                "snmp-server community <redacted> RO",
            ),
            ("tacacs-server key s3cr3t", "tacacs-server key <redacted>"),
            (" key 7 0822455D0A16", " key 7 <redacted>"),
            (
                "crypto isakmp key sharedkey address 0.0.0.0",
                "crypto isakmp key <redacted> address 0.0.0.0",
            ),
            ("  key-string MyKey", "  key-string <redacted>"),
        ] {
            let (got, changed) = redact(&format!("{line}\n"));
            assert_eq!(got, format!("{want}\n"), "{line}");
            assert!(changed, "{line}");
        }
    }

    #[test]
    fn harmless_lines_keep_their_bytes() {
        let text = "hostname sw1\r\n!\ngnxi\ngnxi server\nkey chain OSPF\n crypto key generate rsa\ninterface Gi1/0/1\n   description  two  spaces\nend";
        let (got, changed) = redact(text);
        assert_eq!(got, text);
        assert!(!changed);
    }

    #[test]
    fn private_key_blocks_are_blanked() {
        let text = "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAAA\n-----END RSA PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n";
        let (got, changed) = redact(text);
        assert!(changed);
        assert_eq!(
            got,
            "a\n-----BEGIN RSA PRIVATE KEY-----\n<redacted>\n<redacted>\n-----END RSA PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"
        );
    }
}
