//! Freezing a campaign's plan (pure): which devices, in which waves, in
//! which topology domains, and the plan's hash.
//!
//! Waves are formed deterministically: each canary group is one wave, in
//! the order written; the other targets, sorted by name, go first-fit into
//! waves that fit every budget: at most `budgets.maxUnavailable` devices a
//! wave, and at most a domain's `maxUnavailable` devices of one domain
//! value. First-fit over sorted names spreads each site over the waves, so a
//! wave touches many sites a little rather than one site a lot.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crd::rollout::{IMAGE_FAMILY_LABEL, RolloutPlan};
use crate::reason::RolloutReason;

/// What planning needs to know of a CiscoDevice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// metadata.name.
    pub name: String,
    /// metadata.labels.
    pub labels: BTreeMap<String, String>,
}

/// One wave of the frozen plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// canary-<group> or wave-<n> (n from 1).
    pub name: String,
    /// A canary group: a failure in it halts the campaign, its soak is
    /// canarySoakSeconds.
    #[serde(default)]
    pub canary: bool,
    /// Device names, sorted.
    pub devices: Vec<String>,
}

/// The frozen plan, as stored in the plan ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Format version.
    pub version: u32,
    /// The waves, canary groups first.
    pub waves: Vec<Wave>,
    /// Each target's domain values, in the order of budgets.domains.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topology: BTreeMap<String, Vec<String>>,
}

/// Format version of [`Plan`].
pub const PLAN_VERSION: u32 = 1;

/// Why a plan cannot be frozen. The campaign ends Failed with
/// [`PlanError::reason`] before anything starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The targets matched no CiscoDevice.
    #[error("spec.plan.targets matched no CiscoDevice in the namespace")]
    NoTargets,
    /// More targets than maxTargets.
    #[error(
        "spec.plan.targets matched {found} CiscoDevices, more than spec.plan.targets.maxTargets ({max}); raise maxTargets (at most 10000) or narrow the selector"
    )]
    TooManyTargets {
        /// Devices matched.
        found: usize,
        /// The limit.
        max: i32,
    },
    /// A device named in spec.plan.targets.devices does not exist.
    #[error(
        "spec.plan.targets.devices names {device}, which is not a CiscoDevice of the namespace"
    )]
    DeviceNotFound {
        /// The name.
        device: String,
    },
    /// A canary device is not a target.
    #[error(
        "spec.plan.canaries[{group}] names {device}, which is not a target of the campaign (spec.plan.targets)"
    )]
    CanaryNotTargeted {
        /// Canary group.
        group: String,
        /// The device.
        device: String,
    },
    /// A device is in two canary groups.
    #[error("spec.plan.canaries: {device} is in both group {first} and group {second}")]
    CanaryInTwoGroups {
        /// The device.
        device: String,
        /// The first group naming it.
        first: String,
        /// The second.
        second: String,
    },
    /// A target lacks a domain's topology label.
    #[error(
        "target {device} has no label {key}, the topologyKey of spec.plan.budgets.domains; label every target or remove the domain budget"
    )]
    MissingTopologyLabel {
        /// The device.
        device: String,
        /// The label key.
        key: String,
    },
    /// A target's image family is not the source's.
    #[error(
        "target {device} has {IMAGE_FAMILY_LABEL}={found:?}, not spec.plan.source.imageFamily {want:?}"
    )]
    ImageFamilyMismatch {
        /// The device.
        device: String,
        /// Its label value ("" when absent).
        found: String,
        /// The source's family.
        want: String,
    },
}

impl PlanError {
    /// The wire reason (status.reason, Events).
    pub fn reason(&self) -> RolloutReason {
        match self {
            Self::NoTargets => RolloutReason::NoTargets,
            Self::TooManyTargets { .. } => RolloutReason::TooManyTargets,
            Self::DeviceNotFound { .. } => RolloutReason::DeviceNotFound,
            Self::CanaryNotTargeted { .. } => RolloutReason::CanaryNotTargeted,
            Self::CanaryInTwoGroups { .. } => RolloutReason::CanaryInTwoGroups,
            Self::MissingTopologyLabel { .. } => RolloutReason::MissingTopologyLabel,
            Self::ImageFamilyMismatch { .. } => RolloutReason::ImageFamilyMismatch,
        }
    }
}

/// Resolves the targets of `spec` among `devices` and forms the waves.
pub fn freeze(spec: &RolloutPlan, devices: &[DeviceInfo]) -> Result<Plan, PlanError> {
    let by_name: HashMap<&str, &DeviceInfo> =
        devices.iter().map(|d| (d.name.as_str(), d)).collect();
    let targets = &spec.targets;
    let mut chosen: Vec<&DeviceInfo> = if !targets.devices.is_empty() {
        let mut out = Vec::with_capacity(targets.devices.len());
        for name in &targets.devices {
            match by_name.get(name.as_str()) {
                Some(d) => out.push(*d),
                None => {
                    return Err(PlanError::DeviceNotFound {
                        device: name.clone(),
                    });
                }
            }
        }
        out
    } else if let Some(sel) = &targets.selector {
        devices.iter().filter(|d| sel.matches(&d.labels)).collect()
    } else if targets.allow_all {
        devices.iter().collect()
    } else {
        Vec::new()
    };
    chosen.sort_by(|a, b| a.name.cmp(&b.name));
    chosen.dedup_by(|a, b| a.name == b.name);
    if chosen.is_empty() {
        return Err(PlanError::NoTargets);
    }
    if chosen.len() > targets.max_targets.max(1) as usize {
        return Err(PlanError::TooManyTargets {
            found: chosen.len(),
            max: targets.max_targets,
        });
    }
    if let Some(want) = &spec.source.image_family {
        for d in &chosen {
            let found = d
                .labels
                .get(IMAGE_FAMILY_LABEL)
                .cloned()
                .unwrap_or_default();
            if &found != want {
                return Err(PlanError::ImageFamilyMismatch {
                    device: d.name.clone(),
                    found,
                    want: want.clone(),
                });
            }
        }
    }
    let mut topology = BTreeMap::new();
    if !spec.budgets.domains.is_empty() {
        for d in &chosen {
            let mut values = Vec::with_capacity(spec.budgets.domains.len());
            for dom in &spec.budgets.domains {
                match d.labels.get(&dom.topology_key) {
                    Some(v) => values.push(v.clone()),
                    None => {
                        return Err(PlanError::MissingTopologyLabel {
                            device: d.name.clone(),
                            key: dom.topology_key.clone(),
                        });
                    }
                }
            }
            topology.insert(d.name.clone(), values);
        }
    }

    let target_names: BTreeSet<&str> = chosen.iter().map(|d| d.name.as_str()).collect();
    let mut canary_of: HashMap<&str, &str> = HashMap::new();
    let mut waves = Vec::new();
    for group in &spec.canaries {
        let mut members = Vec::with_capacity(group.devices.len());
        for device in &group.devices {
            if !target_names.contains(device.as_str()) {
                return Err(PlanError::CanaryNotTargeted {
                    group: group.name.clone(),
                    device: device.clone(),
                });
            }
            if let Some(first) = canary_of.insert(device, &group.name) {
                if first != group.name {
                    return Err(PlanError::CanaryInTwoGroups {
                        device: device.clone(),
                        first: first.to_owned(),
                        second: group.name.clone(),
                    });
                }
                continue;
            }
            members.push(device.clone());
        }
        members.sort();
        waves.push(Wave {
            name: format!("canary-{}", group.name),
            canary: true,
            devices: members,
        });
    }

    // First-fit of the rest into waves that fit every budget.
    let cap = spec.budgets.max_unavailable.max(1) as usize;
    let domain_caps: Vec<Option<usize>> = spec
        .budgets
        .domains
        .iter()
        .map(|d| d.max_unavailable.map(|m| m.max(1) as usize))
        .collect();
    struct Open {
        devices: Vec<String>,
        per_domain: Vec<HashMap<String, usize>>,
    }
    let mut open: Vec<Open> = Vec::new();
    let mut first_open = 0;
    for d in chosen
        .iter()
        .filter(|d| !canary_of.contains_key(d.name.as_str()))
    {
        let values = topology.get(&d.name);
        let fits = |w: &Open| {
            w.devices.len() < cap
                && domain_caps
                    .iter()
                    .enumerate()
                    .all(|(i, c)| match (c, values) {
                        (Some(c), Some(v)) => w.per_domain[i].get(&v[i]).copied().unwrap_or(0) < *c,
                        _ => true,
                    })
        };
        while first_open < open.len() && open[first_open].devices.len() >= cap {
            first_open += 1;
        }
        let slot = match (first_open..open.len()).find(|&i| fits(&open[i])) {
            Some(i) => i,
            None => {
                open.push(Open {
                    devices: Vec::new(),
                    per_domain: vec![HashMap::new(); domain_caps.len()],
                });
                open.len() - 1
            }
        };
        let w = &mut open[slot];
        w.devices.push(d.name.clone());
        if let Some(v) = values {
            for (i, value) in v.iter().enumerate() {
                *w.per_domain[i].entry(value.clone()).or_default() += 1;
            }
        }
    }
    waves.extend(open.into_iter().enumerate().map(|(i, w)| Wave {
        name: format!("wave-{}", i + 1),
        canary: false,
        devices: w.devices,
    }));
    Ok(Plan {
        version: PLAN_VERSION,
        waves,
        topology,
    })
}

impl Plan {
    /// Number of targets.
    pub fn target_count(&self) -> usize {
        self.waves.iter().map(|w| w.devices.len()).sum()
    }

    /// Every target with its wave index.
    pub fn targets(&self) -> impl Iterator<Item = (usize, &str)> {
        self.waves
            .iter()
            .enumerate()
            .flat_map(|(i, w)| w.devices.iter().map(move |d| (i, d.as_str())))
    }

    /// `sha256:<hex>` of the plan together with the spec it was frozen
    /// from: the same devices in the same waves with the same source and
    /// policy give the same hash, on any replica.
    pub fn hash(&self, spec: &RolloutPlan) -> String {
        #[derive(Serialize)]
        struct Hashed<'a> {
            spec: &'a RolloutPlan,
            plan: &'a Plan,
        }
        let bytes = serde_json::to_vec(&Hashed { spec, plan: self })
            .expect("a plan serializes: it holds only strings, numbers and maps");
        format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::rollout::{CanaryGroup, DomainBudget, RolloutSource, TargetSelector};

    fn spec(yaml: &str) -> RolloutPlan {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn base() -> RolloutPlan {
        spec(
            r#"
targets: { selector: { matchLabels: { role: access } } }
source: { url: "http://127.0.0.1/x.bin", sha256: "0000000000000000000000000000000000000000000000000000000000000000" }
targetVersion: "17.18.02"
canaries: [{ name: first, devices: [sw-00] }]
"#,
        )
    }

    fn fleet(n: usize, sites: usize) -> Vec<DeviceInfo> {
        (0..n)
            .map(|i| DeviceInfo {
                name: format!("sw-{i:02}"),
                labels: [
                    ("role".to_owned(), "access".to_owned()),
                    ("site".to_owned(), format!("s{}", i % sites)),
                ]
                .into_iter()
                .collect(),
            })
            .collect()
    }

    fn names(p: &Plan) -> Vec<Vec<&str>> {
        p.waves
            .iter()
            .map(|w| w.devices.iter().map(String::as_str).collect())
            .collect()
    }

    #[test]
    fn canaries_first_then_waves_of_max_unavailable() {
        let mut s = base();
        s.budgets.max_unavailable = 2;
        let p = freeze(&s, &fleet(6, 1)).unwrap();
        assert_eq!(
            names(&p),
            vec![
                vec!["sw-00"],
                vec!["sw-01", "sw-02"],
                vec!["sw-03", "sw-04"],
                vec!["sw-05"]
            ]
        );
        assert_eq!(p.waves[0].name, "canary-first");
        assert!(p.waves[0].canary && !p.waves[1].canary);
        assert_eq!(p.waves[3].name, "wave-3");
        assert_eq!(p.target_count(), 6);
    }

    #[test]
    fn a_domain_budget_spreads_each_site_over_the_waves() {
        let mut s = base();
        s.budgets.max_unavailable = 4;
        s.budgets.domains = vec![DomainBudget {
            topology_key: "site".into(),
            max_concurrent_transfers: None,
            max_unavailable: Some(1),
        }];
        // sw-01..sw-08 over two sites (odd s1, even s0): at most one device
        // of a site in a wave, so waves of two.
        let p = freeze(&s, &fleet(9, 2)).unwrap();
        for w in &p.waves[1..] {
            let sites: BTreeSet<&str> = w
                .devices
                .iter()
                .map(|d| p.topology[d][0].as_str())
                .collect();
            assert_eq!(sites.len(), w.devices.len(), "{w:?}");
        }
        assert_eq!(p.waves.len(), 1 + 4);
        assert_eq!(p.topology["sw-03"], vec!["s1".to_owned()]);
    }

    #[test]
    fn the_plan_and_its_hash_do_not_depend_on_list_order() {
        let s = base();
        let mut devices = fleet(20, 3);
        let a = freeze(&s, &devices).unwrap();
        devices.reverse();
        let b = freeze(&s, &devices).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.hash(&s), b.hash(&s));
        assert!(a.hash(&s).starts_with("sha256:") && a.hash(&s).len() == 71);
        let mut other = s.clone();
        other.target_version = "17.18.03".into();
        assert_ne!(a.hash(&s), a.hash(&other), "the spec is part of the hash");
    }

    #[test]
    fn bad_plans_are_refused_with_the_device_named() {
        let devices = fleet(3, 1);
        let cases: Vec<(RolloutPlan, &str, &str)> = vec![
            (
                {
                    let mut s = base();
                    s.targets.selector = Some(TargetSelector {
                        match_labels: [("role".into(), "core".into())].into_iter().collect(),
                        match_expressions: vec![],
                    });
                    s
                },
                "NoTargets",
                "matched no CiscoDevice",
            ),
            (
                {
                    let mut s = base();
                    s.targets.max_targets = 2;
                    s
                },
                "TooManyTargets",
                "matched 3 CiscoDevices",
            ),
            (
                {
                    let mut s = base();
                    s.canaries = vec![CanaryGroup {
                        name: "c".into(),
                        devices: vec!["sw-09".into()],
                    }];
                    s
                },
                "CanaryNotTargeted",
                "sw-09",
            ),
            (
                {
                    let mut s = base();
                    s.canaries.push(CanaryGroup {
                        name: "second".into(),
                        devices: vec!["sw-00".into()],
                    });
                    s
                },
                "CanaryInTwoGroups",
                "sw-00 is in both group first and group second",
            ),
            (
                {
                    let mut s = base();
                    s.budgets.domains = vec![DomainBudget {
                        topology_key: "rack".into(),
                        max_concurrent_transfers: Some(1),
                        max_unavailable: None,
                    }];
                    s
                },
                "MissingTopologyLabel",
                "sw-00 has no label rack",
            ),
            (
                {
                    let mut s = base();
                    s.source = RolloutSource {
                        image_family: Some("cat9k_iosxe".into()),
                        ..s.source
                    };
                    s
                },
                "ImageFamilyMismatch",
                "sw-00",
            ),
            (
                {
                    let mut s = base();
                    s.targets.selector = None;
                    s.targets.devices = vec!["sw-00".into(), "sw-07".into()];
                    s
                },
                "DeviceNotFound",
                "sw-07",
            ),
        ];
        for (s, reason, text) in cases {
            let e = freeze(&s, &devices).unwrap_err();
            assert_eq!(e.reason(), reason, "{e}");
            assert!(e.to_string().contains(text), "{e}");
        }
    }

    #[test]
    fn an_explicit_list_and_allow_all_choose_their_devices() {
        let devices = fleet(4, 1);
        let mut s = base();
        s.targets.selector = None;
        s.targets.devices = vec!["sw-02".into(), "sw-00".into()];
        assert_eq!(
            names(&freeze(&s, &devices).unwrap()),
            vec![vec!["sw-00"], vec!["sw-02"]]
        );
        s.targets.devices.clear();
        s.targets.allow_all = true;
        assert_eq!(freeze(&s, &devices).unwrap().target_count(), 4);
    }

    #[test]
    fn ten_thousand_devices_freeze_into_bounded_waves() {
        let mut s = base();
        s.targets.max_targets = 10_000;
        s.budgets.max_unavailable = 50;
        s.budgets.domains = vec![DomainBudget {
            topology_key: "site".into(),
            max_concurrent_transfers: None,
            max_unavailable: Some(2),
        }];
        let devices: Vec<DeviceInfo> = (0..10_000)
            .map(|i| DeviceInfo {
                name: format!("sw-{i:05}"),
                labels: [
                    ("role".to_owned(), "access".to_owned()),
                    ("site".to_owned(), format!("s{}", i % 200)),
                ]
                .into_iter()
                .collect(),
            })
            .collect();
        s.canaries = vec![CanaryGroup {
            name: "first".into(),
            devices: vec!["sw-00000".into()],
        }];
        let p = freeze(&s, &devices).unwrap();
        assert_eq!(p.target_count(), 10_000);
        assert!(p.waves[1..].iter().all(|w| w.devices.len() <= 50));
        assert_eq!(p.waves.len(), 1 + 9_999usize.div_ceil(50));
    }
}
