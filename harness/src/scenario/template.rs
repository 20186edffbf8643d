//! `{{ key }}` substitution for scenario manifests. Keys are flat dotted
//! names (`namespace`, `devices.sw1.address`, `image.sha256`); an unknown key
//! or an unclosed `{{` is an error naming it, never an empty string.

use std::collections::BTreeMap;

/// Values a manifest may use.
#[derive(Debug, Clone, Default)]
pub struct Vars(BTreeMap<String, String>);

impl Vars {
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Substitutes every `{{ key }}` in `text`.
    pub fn render(&self, text: &str) -> Result<String, String> {
        self.render_with(text, &|_| None)
    }

    /// [`Vars::render`], with `more` asked for the keys not set here (an
    /// observed object's status).
    pub fn render_with(
        &self,
        text: &str,
        more: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| {
                format!(
                    "unclosed '{{{{' near {:?}",
                    after.chars().take(30).collect::<String>()
                )
            })?;
            let key = after[..end].trim();
            let found = self.0.get(key).cloned().or_else(|| more(key));
            let value = found.ok_or_else(|| {
                format!(
                    "unknown template key {key:?} (known: {})",
                    self.0.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            out.push_str(&value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_and_refuses_unknown_keys() {
        let mut v = Vars::default();
        v.set("namespace", "ns1");
        v.set("devices.sw1.name", "sw1");
        assert_eq!(
            v.render("ns: {{namespace}}, dev: {{ devices.sw1.name }}.")
                .unwrap(),
            "ns: ns1, dev: sw1."
        );
        let e = v.render("{{ devices.sw2.name }}").unwrap_err();
        assert!(
            e.contains("\"devices.sw2.name\"") && e.contains("devices.sw1.name"),
            "{e}"
        );
        assert!(v.render("a {{ namespace").unwrap_err().contains("unclosed"));
        assert_eq!(v.render("no keys").unwrap(), "no keys");
        let more = |k: &str| (k == "status.X/a.hash").then(|| "h1".to_owned());
        assert_eq!(
            v.render_with("{{ status.X/a.hash }} in {{ namespace }}", &more)
                .unwrap(),
            "h1 in ns1"
        );
        assert!(v.render_with("{{ status.X/b.hash }}", &more).is_err());
    }
}
