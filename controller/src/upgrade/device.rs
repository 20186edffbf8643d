//! The device as the upgrade reads it from gNMI: boot time, install
//! state, ISSU, free flash and staged images, one leaf at a time (pure;
//! the reconciler does the Get).

use jiff::Timestamp;
use serde_json::Value;

use super::step::{DeviceState, StagedImage};

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Applies one gNMI leaf to the device state.
pub fn apply_leaf(st: &mut DeviceState, path: &str, value: &Value) {
    let leaf = path.rsplit('/').next().unwrap_or_default();
    if path.ends_with("/system/state/boot-time") {
        st.boot_time = as_u64(value).and_then(|ns| Timestamp::from_nanosecond(i128::from(ns)).ok());
    } else if path.contains("/system/install/state/") {
        match leaf {
            "state" => st.install_in_progress = as_string(value) == "in-progress",
            "boot-version" => {
                let v = as_string(value);
                st.boot_version = (!v.is_empty()).then_some(v);
            }
            l if l.contains("issu") => {
                st.issu = match value {
                    Value::Bool(b) => Some(*b),
                    other => Some(matches!(
                        as_string(other).as_str(),
                        "true" | "issu" | "ISSU"
                    )),
                };
            }
            _ => {}
        }
    } else if path.contains("/filesystem[name=flash:]/state/free") {
        st.flash_free = as_u64(value);
    }
}

/// Staged images from `/system/install/images/image[version=V]/state/path`
/// leaves.
pub fn images<'a>(values: impl Iterator<Item = (&'a str, &'a Value)>) -> Vec<StagedImage> {
    let mut out = Vec::new();
    for (path, value) in values {
        if !path.ends_with("/state/path") {
            continue;
        }
        let Some(start) = path.find("image[version=") else {
            continue;
        };
        let rest = &path[start + "image[version=".len()..];
        let Some(end) = rest.find(']') else { continue };
        out.push(StagedImage {
            version: rest[..end].to_owned(),
            path: as_string(value),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::step::{DeviceState, StagedImage};
    use serde_json::json;

    #[test]
    fn gnmi_leaves_fill_the_device_state() {
        let mut st = DeviceState::default();
        apply_leaf(
            &mut st,
            "/system/state/boot-time",
            &json!("1766116039000000000"),
        );
        apply_leaf(
            &mut st,
            "/system/install/state/state",
            &json!("in-progress"),
        );
        apply_leaf(
            &mut st,
            "/system/install/state/boot-version",
            &json!("26.01.01.0.340"),
        );
        apply_leaf(
            &mut st,
            "/system/filesystems/filesystem[name=flash:]/state/free",
            &json!("1234"),
        );
        assert_eq!(st.boot_time.unwrap().as_second(), 1_766_116_039);
        assert!(st.install_in_progress);
        assert_eq!(st.boot_version.as_deref(), Some("26.01.01.0.340"));
        assert_eq!(st.flash_free, Some(1234));
        assert_eq!(st.issu, None);
        apply_leaf(&mut st, "/system/install/state/issu-state", &json!(true));
        assert_eq!(st.issu, Some(true));
        let v1 = json!("flash:gNOI_iosxe_26.01.01.0.340.bin");
        let v2 = json!(123);
        let imgs = images(
            [
                (
                    "/system/install/images/image[version=26.01.01.0.340]/state/path",
                    &v1,
                ),
                (
                    "/system/install/images/image[version=26.01.01.0.340]/state/size",
                    &v2,
                ),
            ]
            .into_iter(),
        );
        assert_eq!(
            imgs,
            [StagedImage {
                version: "26.01.01.0.340".into(),
                path: "flash:gNOI_iosxe_26.01.01.0.340.bin".into()
            }]
        );
    }
}
