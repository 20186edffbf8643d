//! The scenario file format (YAML). One file, one behaviour; see
//! `scenarios/README.md` for the reference with examples.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A scenario as written in its file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scenario {
    /// Short unique name (`[a-z0-9-]+`); the test name in `cargo test`.
    pub name: String,
    /// What behaviour this proves, for people.
    #[serde(default)]
    pub description: String,
    /// `sim-only`, `hardware-safe`, `destructive` (others are free labels).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Whole-scenario time limit.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How the controller runs for this scenario.
    #[serde(default)]
    pub controller: ControllerSpec,
    /// The switches the scenario uses.
    pub devices: Vec<DeviceSpec>,
    /// Fake IOS-XE images the runner generates and serves over HTTP on
    /// loopback, for upgrade scenarios: `{{ images.<name>.url }}`,
    /// `.sha256`, `.version`, `.size`.
    #[serde(default)]
    pub images: Vec<ImageDecl>,
    /// Objects to apply, in order, after the devices' CiscoDevices.
    #[serde(default)]
    pub resources: Vec<Resource>,
    /// Faults injected while the scenario runs.
    #[serde(default)]
    pub timeline: Vec<TimelineStep>,
    /// What must be true.
    pub expect: Vec<Expectation>,
}

/// A generated image (`iosxe_sim::ImageSpec`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageDecl {
    /// Name in template keys (`[a-z0-9-]+`).
    pub name: String,
    /// Full build version written in the image header, e.g.
    /// `17.18.03.0.4200.1770000000`.
    pub version: String,
    /// Size in bytes (default 1 MiB, at most 256 MiB).
    #[serde(default = "default_image_size")]
    pub size: u64,
    /// Devices (sim target) on whose flash the runner stages the image
    /// before the scenario starts, as OS.Install would; its path is
    /// `{{ images.<name>.localPath }}` (for `imageSource.localPath`).
    #[serde(default)]
    pub staged_on: Vec<String>,
}

fn default_image_size() -> u64 {
    1024 * 1024
}

/// Largest generated image.
pub const MAX_IMAGE_SIZE: u64 = 256 * 1024 * 1024;

fn default_timeout() -> Duration {
    Duration::from_secs(120)
}

/// Controller settings for one scenario.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControllerSpec {
    /// `--enable-write-class-gnoi`.
    #[serde(default)]
    pub write_class: bool,
    /// `--enable-iosxesoftwareupgrade`.
    #[serde(default)]
    pub software_upgrade: bool,
    /// Extra environment for the controller process (`CISCO_VK_GNOI_DISABLED`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// One switch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceSpec {
    /// The CiscoDevice name the scenario uses (templated as
    /// `{{ devices.<name>.name }}`).
    pub name: String,
    /// Simulator profile (`c9300-17.18`); the sim target needs it.
    #[serde(default)]
    pub profile: Option<String>,
    /// Serve (sim) or use (both) TLS.
    #[serde(default)]
    pub tls: bool,
    /// Simulated reboot outage, milliseconds (sim only).
    #[serde(default)]
    pub reboot_ms: Option<u64>,
    /// Faults present from the start (sim only), in the simulator's fault
    /// format without `device`.
    #[serde(default)]
    pub faults: Vec<serde_json::Value>,
    /// Device state to set before the scenario starts (sim only), in the
    /// simulator's state-patch format.
    #[serde(default)]
    pub state: Option<serde_json::Value>,
    /// The inventory entry to use on the hardware target (default: `name`).
    #[serde(default)]
    pub inventory: Option<String>,
    /// How the CiscoDevice trusts the switch's SSH host key (`spec.ssh`).
    #[serde(default)]
    pub ssh_trust: SshTrust,
    /// The simulator's CLI user starts at `>` and `enable` asks for this
    /// secret; the runner puts it in the credential Secret as
    /// `enableSecret` (sim only; on hardware the inventory's).
    #[serde(default)]
    pub enable_secret: Option<String>,
    /// Labels of the CiscoDevice (rollout selectors and topology domains).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Host-key trust the runner gives a CiscoDevice's SSH CLI.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SshTrust {
    /// The switch's own key, in a `knownHosts` Secret.
    #[default]
    Known,
    /// A freshly generated key that is not the switch's: the controller
    /// must refuse the connection (`SSHHostKeyRejected`).
    Wrong,
    /// `insecureAcceptAnyHostKey: true`.
    Insecure,
}

/// An object to apply (inline YAML or a file relative to the scenario) or
/// to delete.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resource {
    /// Inline manifest (one or more YAML documents), templated.
    #[serde(default)]
    pub inline: Option<String>,
    /// A manifest file, relative to the scenario file, templated.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Instead of applying: delete this object (`Kind/name`) of the
    /// scenario's namespace, as `kubectl delete` would (finalizers run).
    #[serde(default)]
    pub delete: Option<String>,
    /// Apply only after this long (from the scenario's start).
    #[serde(default, with = "humantime_serde::option")]
    pub after: Option<Duration>,
    /// Apply only when an object has reached a phase.
    #[serde(default)]
    pub when: Option<PhaseTrigger>,
    /// Apply (or delete) only once a simulated device has received a call
    /// (sim target): e.g. the OS.Install that a transfer opens.
    #[serde(default)]
    pub when_called: Option<CallTrigger>,
    /// The API server must refuse this manifest (CEL/OpenAPI validation)
    /// with a message that contains this text; accepting it fails the
    /// scenario.
    #[serde(default)]
    pub refused: Option<String>,
}

/// A point in a scenario: a simulated device's journal holds a call of a
/// method (counted from its arrival, so a call still in flight counts).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CallTrigger {
    /// Which device.
    pub device: String,
    /// Method, matched as journal expectations match it (contained text).
    pub method: String,
}

/// A point in a scenario: an object reached a phase.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PhaseTrigger {
    /// `Kind/name`, e.g. `IOSXESoftwareUpgrade/up1`.
    pub object: String,
    /// The phase.
    pub phase: String,
}

/// A fault injection at a point in time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TimelineStep {
    /// After this long from the scenario's start.
    #[serde(default, with = "humantime_serde::option")]
    pub after: Option<Duration>,
    /// When an object reaches a phase.
    #[serde(default)]
    pub when: Option<PhaseTrigger>,
    /// Which device (every step but killController).
    #[serde(default)]
    pub device: String,
    /// SIGKILL the controller now and start it again (a crash and the
    /// kubelet's restart): what was persisted must carry the work on.
    #[serde(default)]
    pub kill_controller: bool,
    /// The fault, in the simulator's format (sim only).
    #[serde(default)]
    pub inject: Option<serde_json::Value>,
    /// Remove every fault from the device.
    #[serde(default)]
    pub clear_faults: bool,
    /// Reboot the device now (sim only): its listener closes, open
    /// connections are cut, and it comes back after the outage.
    #[serde(default)]
    pub reboot: Option<RebootStep>,
    /// Change the device's state now (sim only), in the simulator's
    /// state-patch format, as the control API's `PATCH .../state` does
    /// (`{ hostname: core-sw1 }` changes what `show running-config` prints).
    #[serde(default)]
    pub state: Option<serde_json::Value>,
}

/// A reboot of a simulated device, as a power cycle or a `reload` from the
/// console would do: nothing asked for it over gNOI.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RebootStep {
    /// Outage length in milliseconds (default: the device's `rebootMs`,
    /// then the profile's).
    #[serde(default)]
    pub ms: Option<u64>,
    /// The reason the device records.
    #[serde(default)]
    pub reason: Option<String>,
}

impl TimelineStep {
    /// How many actions the step names (exactly one is valid).
    fn action_count(&self) -> usize {
        usize::from(self.inject.is_some())
            + usize::from(self.clear_faults)
            + usize::from(self.reboot.is_some())
            + usize::from(self.state.is_some())
            + usize::from(self.kill_controller)
    }
}

/// Something that must hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expectation {
    /// `Kind/name` of an applied object; its status is checked.
    #[serde(default)]
    pub object: Option<String>,
    /// The phases it must pass through, in order (others may come between).
    #[serde(default)]
    pub phases: Vec<String>,
    /// Phases it must never show.
    #[serde(default)]
    pub never_phases: Vec<String>,
    /// The phase it must end in (and stay in).
    #[serde(default)]
    pub terminal: Option<String>,
    /// Conditions on the final status.
    #[serde(default)]
    pub conditions: Vec<ConditionExpectation>,
    /// Status fields: a dotted path into `.status` and the text its value
    /// must contain (`"reason": "ServiceUnsupported"`).
    #[serde(default)]
    pub status: BTreeMap<String, String>,
    /// Events on the object: reason and a text the message contains.
    #[serde(default)]
    pub events: Vec<EventExpectation>,
    /// The object reaches its terminal phase within this long.
    #[serde(default, with = "humantime_serde::option")]
    pub within: Option<Duration>,
    /// Journal counts on a device (sim only).
    #[serde(default)]
    pub journal: Option<JournalExpectation>,
    /// A ConfigMap of the scenario's namespace (an operation's spilled
    /// output), read once the objects have settled.
    #[serde(default)]
    pub config_map: Option<ConfigMapExpectation>,
    /// How many of some devices were unavailable at once (sim only).
    #[serde(default)]
    pub unavailable: Option<UnavailableExpectation>,
}

/// At most `max` of `devices` unavailable at any instant, read from the
/// simulator journals: a device is unavailable from the arrival of an
/// OS.Activate (the upgrade reboots it) to the arrival of the next call it
/// journaled (it answered again), or to the end of the run. `min` asks that
/// the most at once was at least that many (the budget was used, not just
/// respected).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UnavailableExpectation {
    pub devices: Vec<String>,
    pub max: usize,
    #[serde(default)]
    pub min: Option<usize>,
}

/// What a ConfigMap must hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigMapExpectation {
    pub name: String,
    /// The data key (default `output`).
    #[serde(default = "default_output_key")]
    pub key: String,
    /// Text the value contains.
    #[serde(default)]
    pub contains: Option<String>,
    /// The value is at least this many bytes.
    #[serde(default)]
    pub min_bytes: Option<usize>,
}

fn default_output_key() -> String {
    "output".into()
}

/// A condition on the final status.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConditionExpectation {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// An Event on an object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventExpectation {
    pub reason: String,
    #[serde(default)]
    pub message: Option<String>,
}

/// How many RPCs of a method a device saw.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JournalExpectation {
    pub device: String,
    /// Full method (`/gnoi.os.OS/Activate`) or a part of it (`Activate`).
    pub method: String,
    /// Match `method` exactly instead of as a part, so
    /// `/gnoi.system.System/Reboot` does not also count `RebootStatus`.
    #[serde(default)]
    pub exact: bool,
    /// Exactly this many.
    #[serde(default)]
    pub count: Option<usize>,
    #[serde(default)]
    pub min: Option<usize>,
    #[serde(default)]
    pub max: Option<usize>,
}

/// A scenario file that failed to load, with where and what.
#[derive(Debug, thiserror::Error)]
#[error("{path}{}: {message}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct ScenarioError {
    pub path: PathBuf,
    /// Line and column, 1-based, where known.
    pub location: Option<(usize, usize)>,
    pub message: String,
}

/// A scenario and the file it came from.
#[derive(Debug, Clone)]
pub struct LoadedScenario {
    pub path: PathBuf,
    pub scenario: Scenario,
}

impl LoadedScenario {
    pub fn has_tag(&self, tag: &str) -> bool {
        self.scenario.tags.iter().any(|t| t == tag)
    }
}

/// Reads and checks one scenario file.
pub fn load(path: &Path) -> Result<LoadedScenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        path: path.to_owned(),
        location: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(path, &text)
}

/// Parses and checks scenario text.
pub fn parse(path: &Path, text: &str) -> Result<LoadedScenario, ScenarioError> {
    let scenario: Scenario = serde_yaml::from_str(text).map_err(|e| ScenarioError {
        path: path.to_owned(),
        location: e.location().map(|l| (l.line(), l.column())),
        message: e.to_string(),
    })?;
    let fail = |message: String| ScenarioError {
        path: path.to_owned(),
        location: locate(text, &message),
        message,
    };
    if scenario.name.is_empty()
        || !scenario
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(fail(format!(
            "name {:?}: use lowercase letters, digits and '-'",
            scenario.name
        )));
    }
    if scenario.devices.is_empty() {
        return Err(fail("devices: a scenario needs at least one device".into()));
    }
    let device_names: Vec<&str> = scenario.devices.iter().map(|d| d.name.as_str()).collect();
    for (i, d) in scenario.devices.iter().enumerate() {
        if device_names[..i].contains(&d.name.as_str()) {
            return Err(fail(format!("devices: {:?} is listed twice", d.name)));
        }
    }
    let known_device = |name: &str, field: &str| {
        if device_names.contains(&name) {
            Ok(())
        } else {
            Err(format!(
                "{field}: device {name:?} is not in devices ({})",
                device_names.join(", ")
            ))
        }
    };
    for (i, img) in scenario.images.iter().enumerate() {
        let ok_name = !img.name.is_empty()
            && img
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok_name {
            return Err(fail(format!(
                "images[{i}].name: {:?} must match [a-z0-9-]+",
                img.name
            )));
        }
        if scenario.images[..i].iter().any(|o| o.name == img.name) {
            return Err(fail(format!("images: {:?} is listed twice", img.name)));
        }
        if img.size == 0 || img.size > MAX_IMAGE_SIZE {
            return Err(fail(format!(
                "images[{i}].size: {} is out of range 1-{MAX_IMAGE_SIZE} bytes",
                img.size
            )));
        }
        for d in &img.staged_on {
            known_device(d, &format!("images[{i}].stagedOn")).map_err(fail)?;
        }
    }
    for (i, r) in scenario.resources.iter().enumerate() {
        let given = [r.inline.is_some(), r.file.is_some(), r.delete.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(fail(format!(
                "resources[{i}]: give exactly one of inline, file or delete"
            )));
        }
        if let Some(d) = &r.delete {
            check_object_ref(d).map_err(|m| fail(format!("resources[{i}].delete: {m}")))?;
        }
        match &r.refused {
            Some(_) if r.delete.is_some() => {
                return Err(fail(format!(
                    "resources[{i}].refused: a delete cannot be refused by validation"
                )));
            }
            Some(t) if t.trim().is_empty() => {
                return Err(fail(format!(
                    "resources[{i}].refused: give the text the refusal must contain"
                )));
            }
            _ => {}
        }
        let triggers = [r.after.is_some(), r.when.is_some(), r.when_called.is_some()];
        if triggers.iter().filter(|t| **t).count() > 1 {
            return Err(fail(format!(
                "resources[{i}]: give at most one of after, when or whenCalled"
            )));
        }
        if let Some(c) = &r.when_called {
            known_device(&c.device, &format!("resources[{i}].whenCalled.device")).map_err(fail)?;
            if c.method.trim().is_empty() {
                return Err(fail(format!("resources[{i}].whenCalled.method: is empty")));
            }
        }
        if let Some(w) = &r.when {
            check_object_ref(&w.object)
                .map_err(|m| fail(format!("resources[{i}].when.object: {m}")))?;
        }
    }
    for (i, t) in scenario.timeline.iter().enumerate() {
        if t.after.is_some() == t.when.is_some() {
            return Err(fail(format!(
                "timeline[{i}]: give exactly one of after or when"
            )));
        }
        if t.action_count() != 1 {
            return Err(fail(format!(
                "timeline[{i}]: give exactly one of inject, clearFaults, reboot, state or killController"
            )));
        }
        if t.reboot.as_ref().and_then(|r| r.ms) == Some(0) {
            return Err(fail(format!(
                "timeline[{i}].reboot.ms: an outage lasts at least 1 ms"
            )));
        }
        if t.kill_controller {
            if !t.device.is_empty() {
                return Err(fail(format!(
                    "timeline[{i}].device: killController acts on the controller, not a device"
                )));
            }
        } else {
            known_device(&t.device, &format!("timeline[{i}].device")).map_err(fail)?;
        }
        if let Some(w) = &t.when {
            check_object_ref(&w.object)
                .map_err(|m| fail(format!("timeline[{i}].when.object: {m}")))?;
        }
    }
    if scenario.expect.is_empty() {
        return Err(fail(
            "expect: a scenario needs at least one expectation".into(),
        ));
    }
    for (i, e) in scenario.expect.iter().enumerate() {
        match (&e.object, &e.journal, &e.config_map, &e.unavailable) {
            (Some(o), None, None, None) => {
                check_object_ref(o).map_err(|m| fail(format!("expect[{i}].object: {m}")))?
            }
            (None, None, Some(c), None) => {
                if c.name.trim().is_empty() {
                    return Err(fail(format!("expect[{i}].configMap.name: is empty")));
                }
            }
            (None, Some(j), None, None) => {
                known_device(&j.device, &format!("expect[{i}].journal.device")).map_err(fail)?;
                if j.count.is_none() && j.min.is_none() && j.max.is_none() {
                    return Err(fail(format!("expect[{i}].journal: give count, min or max")));
                }
            }
            (None, None, None, Some(u)) => {
                if u.devices.len() < 2 {
                    return Err(fail(format!(
                        "expect[{i}].unavailable.devices: name at least two devices"
                    )));
                }
                for (k, d) in u.devices.iter().enumerate() {
                    known_device(d, &format!("expect[{i}].unavailable.devices[{k}]"))
                        .map_err(fail)?;
                }
                if u.max == 0 || u.min.is_some_and(|m| m > u.max) {
                    return Err(fail(format!(
                        "expect[{i}].unavailable: max must be at least 1 and min at most max"
                    )));
                }
            }
            _ => {
                return Err(fail(format!(
                    "expect[{i}]: give exactly one of object, journal, configMap or unavailable"
                )));
            }
        }
    }
    Ok(LoadedScenario {
        path: path.to_owned(),
        scenario,
    })
}

fn check_object_ref(r: &str) -> Result<(), String> {
    match r.split_once('/') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() && !name.contains('/') => Ok(()),
        _ => Err(format!("{r:?} is not Kind/name")),
    }
}

/// The line of the first quoted word of a message, so semantic errors point
/// into the file too.
fn locate(text: &str, message: &str) -> Option<(usize, usize)> {
    let needle = message.split('"').nth(1).filter(|s| !s.is_empty())?;
    text.lines()
        .enumerate()
        .find_map(|(i, line)| line.find(needle).map(|c| (i + 1, c + 1)))
}

/// Every `*.yaml` scenario directly in `dir`, sorted by file name.
pub fn discover(dir: &Path) -> Result<Vec<PathBuf>, ScenarioError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ScenarioError {
        path: dir.to_owned(),
        location: None,
        message: format!("cannot list scenarios: {e}"),
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: time-probe
tags: [hardware-safe]
timeout: 30s
devices:
  - name: sw1
    profile: c9300-17.18
resources:
  - inline: |
      apiVersion: ops.cisco.vk/v1alpha1
      kind: DeviceOperation
      metadata: { name: t1 }
expect:
  - object: DeviceOperation/t1
    terminal: Succeeded
    within: 20s
  - journal: { device: sw1, method: Time, count: 1 }
"#;

    #[test]
    fn a_good_file_parses_with_defaults() {
        let s = parse(Path::new("s.yaml"), GOOD).unwrap();
        assert_eq!(s.scenario.timeout, Duration::from_secs(30));
        assert!(s.has_tag("hardware-safe"));
        assert!(!s.scenario.controller.write_class);
        assert_eq!(s.scenario.expect[0].within, Some(Duration::from_secs(20)));
    }

    #[test]
    fn unknown_fields_are_refused_with_path_line_and_name() {
        let bad = GOOD.replace("    profile: c9300-17.18", "    profle: c9300-17.18");
        let e = parse(Path::new("scenarios/x.yaml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("scenarios/x.yaml:7:"), "{e}");
        assert!(e.contains("unknown field `profle`"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_field_and_point_at_the_line() {
        let bad = GOOD.replace("device: sw1, method", "device: sw9, method");
        let e = parse(Path::new("x.yaml"), &bad).unwrap_err();
        assert!(e.message.contains("expect[1].journal.device"), "{e}");
        assert!(e.message.contains("\"sw9\""), "{e}");
        assert_eq!(e.location.map(|l| l.0), Some(17), "{e}");

        let bad = GOOD.replace("count: 1", "");
        let e = parse(Path::new("x.yaml"), &bad).unwrap_err();
        assert!(e.message.contains("give count, min or max"), "{e}");

        let bad = GOOD.replace("object: DeviceOperation/t1", "object: t1");
        let e = parse(Path::new("x.yaml"), &bad).unwrap_err();
        assert!(e.message.contains("is not Kind/name"), "{e}");
    }

    #[test]
    fn staged_images_name_known_devices() {
        let with = |on: &str| {
            GOOD.replace(
                "resources:\n",
                &format!(
                    "images:\n  - name: new\n    version: 17.18.03\n    stagedOn: [{on}]\nresources:\n"
                ),
            )
        };
        let s = parse(Path::new("x.yaml"), &with("sw1")).unwrap();
        assert_eq!(s.scenario.images[0].staged_on, ["sw1"]);
        let e = parse(Path::new("x.yaml"), &with("sw9")).unwrap_err();
        assert!(e.message.contains("images[0].stagedOn"), "{e}");
        assert!(e.message.contains("\"sw9\" is not in devices (sw1)"), "{e}");
    }

    #[test]
    fn a_delete_step_names_an_object_and_may_wait_for_a_call() {
        let with = |step: &str| GOOD.replace("expect:\n", &format!("{step}expect:\n"));
        let s = parse(
            Path::new("x.yaml"),
            &with("  - delete: DeviceOperation/t1\n    whenCalled: { device: sw1, method: /gnoi.system.System/Time }\n"),
        )
        .unwrap();
        let r = &s.scenario.resources[1];
        assert_eq!(r.delete.as_deref(), Some("DeviceOperation/t1"));
        let c = r.when_called.as_ref().unwrap();
        assert_eq!(
            (c.device.as_str(), c.method.as_str()),
            ("sw1", "/gnoi.system.System/Time")
        );
        for (step, want) in [
            (
                "  - delete: DeviceOperation/t1\n    inline: \"x\"\n",
                "resources[1]: give exactly one of inline, file or delete",
            ),
            (
                "  - delete: t1\n",
                "resources[1].delete: \"t1\" is not Kind/name",
            ),
            (
                "  - delete: DeviceOperation/t1\n    whenCalled: { device: sw9, method: Time }\n",
                "resources[1].whenCalled.device: device \"sw9\" is not in devices (sw1)",
            ),
            (
                "  - delete: DeviceOperation/t1\n    whenCalled: { device: sw1, method: \" \" }\n",
                "resources[1].whenCalled.method: is empty",
            ),
            (
                "  - delete: DeviceOperation/t1\n    after: 1s\n    whenCalled: { device: sw1, method: Time }\n",
                "resources[1]: give at most one of after, when or whenCalled",
            ),
        ] {
            let e = parse(Path::new("x.yaml"), &with(step)).unwrap_err();
            assert!(e.message.contains(want), "{e}");
        }
    }

    #[test]
    fn cli_fields_parse_and_bad_ones_are_refused() {
        let cli = GOOD
            .replace(
                "    profile: c9300-17.18\n",
                "    profile: c9300-17.18\n    sshTrust: wrong\n    enableSecret: en\n",
            )
            .replace(
                "  - inline: |\n",
                "  - refused: spec.operation.commands[0]\n    inline: |\n",
            )
            .replace(
                "  - journal: { device: sw1, method: Time, count: 1 }\n",
                "  - configMap: { name: t1-output, minBytes: 10 }\ntimeline:\n  - after: 1s\n    device: sw1\n    state: { hostname: core }\n",
            );
        let s = parse(Path::new("c.yaml"), &cli).unwrap();
        let d = &s.scenario.devices[0];
        assert_eq!(d.ssh_trust, SshTrust::Wrong);
        assert_eq!(d.enable_secret.as_deref(), Some("en"));
        assert_eq!(
            s.scenario.resources[0].refused.as_deref(),
            Some("spec.operation.commands[0]")
        );
        let c = s.scenario.expect[1].config_map.as_ref().unwrap();
        assert_eq!((c.key.as_str(), c.min_bytes), ("output", Some(10)));
        assert!(s.scenario.timeline[0].state.is_some());

        let bad = cli.replace("    sshTrust: wrong", "    sshTrust: maybe");
        let e = parse(Path::new("c.yaml"), &bad).unwrap_err();
        assert!(e.message.contains("maybe"), "{e}");
        let bad = cli.replace("refused: spec.operation.commands[0]", "refused: \"  \"");
        let e = parse(Path::new("c.yaml"), &bad).unwrap_err();
        assert!(e.message.contains("resources[0].refused"), "{e}");
        let bad = cli.replace(
            "  - configMap: { name: t1-output, minBytes: 10 }",
            "  - configMap: { name: t1-output }\n    object: DeviceOperation/t1",
        );
        let e = parse(Path::new("c.yaml"), &bad).unwrap_err();
        assert!(
            e.message
                .contains("give exactly one of object, journal, configMap or unavailable"),
            "{e}"
        );
    }

    #[test]
    fn kill_controller_steps_unavailable_expectations_and_labels_are_checked() {
        let step = |body: &str| {
            GOOD.replace(
                "expect:\n",
                &format!("timeline:\n  - after: 1s\n{body}expect:\n"),
            )
        };
        let s = parse(Path::new("x.yaml"), &step("    killController: true\n")).unwrap();
        assert!(s.scenario.timeline[0].kill_controller);
        let e = parse(
            Path::new("x.yaml"),
            &step("    killController: true\n    device: sw1\n"),
        )
        .unwrap_err();
        assert!(
            e.message.contains("killController acts on the controller"),
            "{e}"
        );
        let e = parse(Path::new("x.yaml"), &step("    clearFaults: true\n")).unwrap_err();
        assert!(e.message.contains("timeline[0].device"), "{e}");

        let two = GOOD.replace(
            "  - name: sw1\n    profile: c9300-17.18\n",
            "  - name: sw1\n    profile: c9300-17.18\n    labels: { site: a }\n  - name: sw2\n    profile: c9300-17.18\n",
        );
        let s = parse(Path::new("x.yaml"), &two).unwrap();
        assert_eq!(s.scenario.devices[0].labels["site"], "a");
        assert!(s.scenario.devices[1].labels.is_empty());
        let expect =
            |u: &str| two.replace("expect:\n", &format!("expect:\n  - unavailable: {u}\n"));
        parse(
            Path::new("x.yaml"),
            &expect("{ devices: [sw1, sw2], max: 1 }"),
        )
        .unwrap();
        for (bad, says) in [
            ("{ devices: [sw1], max: 1 }", "name at least two devices"),
            ("{ devices: [sw1, sw9], max: 1 }", "unavailable.devices[1]"),
            ("{ devices: [sw1, sw2], max: 0 }", "max must be at least 1"),
            ("{ devices: [sw1, sw2], max: 1, min: 2 }", "min at most max"),
        ] {
            let e = parse(Path::new("x.yaml"), &expect(bad)).unwrap_err();
            assert!(e.message.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_reboot_step_parses_and_is_one_action() {
        let with = |step: &str| {
            GOOD.replace(
                "expect:\n",
                &format!("timeline:\n  - after: 1s\n    device: sw1\n{step}expect:\n"),
            )
        };
        let s = parse(
            Path::new("x.yaml"),
            &with("    reboot: { ms: 1500, reason: power }\n"),
        )
        .unwrap();
        let r = s.scenario.timeline[0].reboot.clone().unwrap();
        assert_eq!(r.ms, Some(1500));
        assert_eq!(r.reason.as_deref(), Some("power"));
        let s = parse(Path::new("x.yaml"), &with("    reboot: {}\n")).unwrap();
        assert_eq!(s.scenario.timeline[0].reboot.as_ref().unwrap().ms, None);

        let e = parse(
            Path::new("x.yaml"),
            &with("    reboot: {}\n    clearFaults: true\n"),
        )
        .unwrap_err();
        assert!(
            e.message
                .contains("timeline[0]: give exactly one of inject, clearFaults, reboot, state or killController"),
            "{e}"
        );
        let e = parse(Path::new("x.yaml"), &with("    reboot: { ms: 0 }\n")).unwrap_err();
        assert!(e.message.contains("timeline[0].reboot.ms"), "{e}");
        let e = parse(Path::new("x.yaml"), &with("    reboot: { seconds: 3 }\n")).unwrap_err();
        assert!(e.to_string().contains("unknown field `seconds`"), "{e}");
    }

    #[test]
    fn a_bad_duration_is_refused() {
        let bad = GOOD.replace("timeout: 30s", "timeout: thirty");
        let e = parse(Path::new("x.yaml"), &bad).unwrap_err().to_string();
        assert!(e.contains("x.yaml:4:"), "{e}");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// Checks what `parse` promises for any input: no panic, and a
        /// refusal that names the file, says something, and points (when it
        /// points) at a line of the text.
        fn check(text: &str) -> Result<Option<LoadedScenario>, TestCaseError> {
            match parse(Path::new("scenarios/f.yaml"), text) {
                Ok(s) => Ok(Some(s)),
                Err(e) => {
                    prop_assert!(!e.message.trim().is_empty());
                    prop_assert!(e.to_string().starts_with("scenarios/f.yaml"), "{e}");
                    if let Some((line, col)) = e.location {
                        prop_assert!(line >= 1 && col >= 1, "{e}");
                        prop_assert!(line <= text.lines().count() + 1, "{e} beyond the text");
                    }
                    Ok(None)
                }
            }
        }

        /// The scenario files of the suite, as mutation seeds.
        fn suite() -> Vec<String> {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
            discover(&dir)
                .unwrap()
                .iter()
                .map(|p| std::fs::read_to_string(p).unwrap())
                .collect()
        }

        #[derive(Debug, Clone)]
        enum Edit {
            DeleteLine(prop::sample::Index),
            DuplicateLine(prop::sample::Index),
            ReplaceLine(prop::sample::Index, String),
            Splice(prop::sample::Index, String),
        }

        fn edit() -> impl Strategy<Value = Edit> {
            let text = "[ -~\t\n\u{e9}]{0,24}";
            prop_oneof![
                any::<prop::sample::Index>().prop_map(Edit::DeleteLine),
                any::<prop::sample::Index>().prop_map(Edit::DuplicateLine),
                (any::<prop::sample::Index>(), text).prop_map(|(i, t)| Edit::ReplaceLine(i, t)),
                (any::<prop::sample::Index>(), text).prop_map(|(i, t)| Edit::Splice(i, t)),
            ]
        }

        fn apply(text: &str, edit: &Edit) -> String {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.is_empty() {
                lines.push(String::new());
            }
            match edit {
                Edit::DeleteLine(i) => {
                    lines.remove(i.index(lines.len()));
                }
                Edit::DuplicateLine(i) => {
                    let i = i.index(lines.len());
                    lines.insert(i, lines[i].clone());
                }
                Edit::ReplaceLine(i, t) => {
                    let i = i.index(lines.len());
                    lines[i] = t.clone();
                }
                Edit::Splice(i, t) => {
                    let i = i.index(lines.len());
                    let cut = lines[i].len() / 2;
                    let cut = (0..=cut)
                        .rev()
                        .find(|c| lines[i].is_char_boundary(*c))
                        .unwrap_or(0);
                    lines[i].insert_str(cut, t);
                }
            }
            lines.join("\n") + "\n"
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn any_text_parses_or_gives_a_located_error(text in any::<String>()) {
                check(&text)?;
            }

            #[test]
            fn yaml_like_text_parses_or_gives_a_located_error(
                text in "([a-zA-Z]{1,8}: ?[a-z0-9 {}\\[\\],:-]{0,12}\n( {2,4}- )?){0,12}"
            ) {
                check(&text)?;
            }

            #[test]
            fn edited_scenarios_parse_or_give_a_located_error(
                which in any::<prop::sample::Index>(),
                edits in prop::collection::vec(edit(), 1..4),
            ) {
                let seeds = suite();
                let mut text = seeds[which.index(seeds.len())].clone();
                for e in &edits {
                    text = apply(&text, e);
                }
                check(&text)?;
            }

            #[test]
            fn the_name_rule_is_exactly_lowercase_digits_and_dashes(name in "[ -~]{0,12}") {
                let quoted = serde_json::to_string(&name).unwrap();
                let text = GOOD.replace("name: time-probe", &format!("name: {quoted}"));
                let want = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                match check(&text)? {
                    Some(s) => {
                        prop_assert!(want, "{name:?} accepted");
                        prop_assert_eq!(s.scenario.name, name);
                    }
                    None => {
                        prop_assert!(!want, "{name:?} refused");
                        let e = parse(Path::new("x.yaml"), &text).unwrap_err();
                        prop_assert!(e.message.contains(&format!("name {name:?}")), "{e}");
                    }
                }
            }
        }

        #[test]
        fn every_suite_scenario_parses() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
            for p in discover(&dir).unwrap() {
                load(&p).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
}
