//! The host side of the kind set-up, without an engine: the runtime wrapper
//! rewrites exactly the capability lists of the spec it is handed and then
//! runs the real runtime with the same arguments; the engine script refuses
//! an engine that does not answer, naming it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fake runc that records its arguments.
fn fake_runc(dir: &Path) -> PathBuf {
    let path = dir.join("runc");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\n",
            dir.join("args").display()
        ),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    path
}

fn caps(list: &[&str]) -> Value {
    json!({ "bounding": list, "effective": list, "permitted": list })
}

fn wrapper(dir: &Path, args: &[&str]) {
    let out = Command::new(repo().join("kind/host/runc-drop-sys-resource"))
        .args(args)
        .env("CVK_REAL_RUNC", fake_runc(dir))
        .output()
        .expect("running the wrapper (needs jq)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = std::fs::read_to_string(dir.join("args")).unwrap();
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        args,
        "arguments passed on unchanged"
    );
}

#[test]
fn create_drops_cap_sys_resource_from_the_bundle_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": { "args": ["sleep"], "capabilities": caps(&["CAP_CHOWN", "CAP_SYS_RESOURCE", "CAP_SYS_ADMIN"]) },
        "root": { "path": "rootfs" },
    });
    std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
    wrapper(
        dir.path(),
        &[
            "--root",
            "/run/x",
            "--log",
            "/x.log",
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "id1",
        ],
    );
    let after: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(
        after["process"]["capabilities"],
        caps(&["CAP_CHOWN", "CAP_SYS_ADMIN"])
    );
    assert_eq!(after["root"], spec["root"]);
    assert_eq!(after["process"]["args"], spec["process"]["args"]);
}

#[test]
fn exec_drops_it_from_the_process_spec_and_leaves_a_spec_without_capabilities_alone() {
    let dir = tempfile::tempdir().unwrap();
    let process = dir.path().join("process.json");
    std::fs::write(
        &process,
        json!({ "args": ["sh"], "capabilities": caps(&["CAP_SYS_RESOURCE", "CAP_NET_ADMIN"]) })
            .to_string(),
    )
    .unwrap();
    wrapper(
        dir.path(),
        &[
            "exec",
            "--process",
            process.to_str().unwrap(),
            "--detach",
            "id1",
        ],
    );
    let after: Value = serde_json::from_str(&std::fs::read_to_string(&process).unwrap()).unwrap();
    assert_eq!(after["capabilities"], caps(&["CAP_NET_ADMIN"]));

    let bare = json!({ "args": ["sh"] });
    std::fs::write(&process, bare.to_string()).unwrap();
    wrapper(
        dir.path(),
        &["exec", "--process", process.to_str().unwrap(), "id1"],
    );
    let after: Value = serde_json::from_str(&std::fs::read_to_string(&process).unwrap()).unwrap();
    assert_eq!(after, bare);
    // Other commands are passed through untouched.
    wrapper(dir.path(), &["state", "id1"]);
}

#[test]
fn the_engine_script_names_an_engine_that_does_not_answer() {
    let out = Command::new("bash")
        .arg(repo().join("kind/host/docker.sh"))
        .arg("up")
        .env("DOCKER_HOST", "unix:///nonexistent/cvk-test.sock")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DOCKER_HOST=unix:///nonexistent/cvk-test.sock does not answer"),
        "{err}"
    );
}
