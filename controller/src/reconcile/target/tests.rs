use super::*;
use crate::crd::LocalObjectRef;
use crate::crd::device::{DeviceTls, GnoiConfig, GnoiTls};

fn spec() -> CiscoDeviceSpec {
    CiscoDeviceSpec {
        driver: Driver::Xe,
        address: "192.0.2.10".into(),
        port: None,
        username: None,
        credential_secret_ref: None,
        tls: None,
        gnoi: None,
        ssh: None,
    }
}

#[test]
fn cli_targets_need_trust_and_credentials() {
    use crate::crd::device::SshConfig;
    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    let mut s = spec();
    s.credential_secret_ref = Some(LocalObjectRef::new("creds"));
    let creds = secret(
        "creds",
        &[
            ("username", "ops"),
            ("password", "pw"),
            ("enableSecret", "en"),
        ],
    );
    let t = build_target("ns/sw", &s, Some(&creds), None, &GnoiSettings::default()).unwrap();
    // No spec.ssh: no trust, no CLI.
    let e = build_cli_target("ns/sw", &s, &t, Some(&creds), None).unwrap_err();
    assert_eq!(e.reason(), "SSHTrustNotConfigured");
    assert!(
        e.to_string().contains("spec.ssh.knownHostsSecretRef"),
        "{e}"
    );
    s.ssh = Some(SshConfig {
        port: Some(2222),
        known_hosts_secret_ref: Some(LocalObjectRef::new("kh")),
        insecure_accept_any_host_key: false,
    });
    let kh = secret(
        "kh",
        &[("known_hosts", &format!("[192.0.2.10]:2222 {KEY}\n"))],
    );
    let c = build_cli_target("ns/sw", &s, &t, Some(&creds), Some(&kh)).unwrap();
    assert_eq!((c.host.as_str(), c.port), ("192.0.2.10", 2222));
    assert_eq!((c.username.as_str(), c.password.as_str()), ("ops", "pw"));
    assert_eq!(c.enable_secret.as_deref(), Some("en"));
    assert!(matches!(c.host_keys, HostKeys::Known(_)));
    let bad = secret("kh", &[("knownHosts", "host ssh-ed25519\n")]);
    let e = build_cli_target("ns/sw", &s, &t, Some(&creds), Some(&bad)).unwrap_err();
    assert_eq!(e.reason(), "SSHKnownHostsInvalid");
    assert!(e.to_string().contains("line 1"), "{e}");
    let empty = secret("kh", &[]);
    let e = build_cli_target("ns/sw", &s, &t, Some(&creds), Some(&empty)).unwrap_err();
    assert!(e.to_string().contains("knownHosts"), "{e}");
    s.ssh = Some(SshConfig {
        insecure_accept_any_host_key: true,
        ..SshConfig::default()
    });
    let c = build_cli_target("ns/sw", &s, &t, Some(&creds), None).unwrap();
    assert_eq!((c.port, &c.host_keys), (22, &HostKeys::InsecureAcceptAny));
    // No credentials: refused.
    let anon = build_target("ns/sw", &spec(), None, None, &GnoiSettings::default()).unwrap();
    let e = build_cli_target("ns/sw", &s, &anon, None, None).unwrap_err();
    assert_eq!(e.reason(), "NoCredentials");
}

fn secret(name: &str, pairs: &[(&str, &str)]) -> SecretData {
    SecretData {
        name: name.into(),
        data: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect(),
    }
}

fn insecure() -> GnoiSettings {
    GnoiSettings {
        insecure: true,
        ..Default::default()
    }
}

#[test]
fn credentials_from_the_secret_and_the_spec() {
    let s = secret("creds", &[("username", "fromsecret"), ("password", "pw")]);
    let t = build_target("ns/d", &spec(), Some(&s), None, &insecure()).unwrap();
    let c = t.credentials.unwrap();
    assert_eq!(
        (c.username.as_str(), c.password.as_str()),
        ("fromsecret", "pw")
    );

    let mut sp = spec();
    sp.username = Some("fromspec".into());
    let t = build_target("ns/d", &sp, Some(&s), None, &insecure()).unwrap();
    assert_eq!(t.credentials.unwrap().username, "fromspec");

    let nopw = secret("creds", &[("username", "u")]);
    let e = build_target("ns/d", &sp, Some(&nopw), None, &insecure()).unwrap_err();
    assert!(
        matches!(
            e,
            TargetError::SecretKeyMissing {
                key: "password",
                ..
            }
        ),
        "{e}"
    );

    let nouser = secret("creds", &[("password", "pw")]);
    let e = build_target("ns/d", &spec(), Some(&nouser), None, &insecure()).unwrap_err();
    assert_eq!(e.reason(), "NoUsername");

    let e = build_target("ns/d", &sp, None, None, &insecure()).unwrap_err();
    assert_eq!(e.category(), "no_password_secret");

    let t = build_target("ns/d", &spec(), None, None, &insecure()).unwrap();
    assert_eq!(t.credentials, None);
    assert_eq!(t.name, "ns/d");
}

#[test]
fn transport_and_port_rules() {
    let secure = GnoiSettings::default();
    let lab = insecure();
    let pinned = GnoiSettings {
        port: Some(7000),
        ..Default::default()
    };
    let with = |ts: TransportSecurity, port: Option<i32>, tls_enabled: bool| {
        let mut s = spec();
        s.gnoi = Some(GnoiConfig {
            port,
            transport_security: ts,
            tls: None,
        });
        s.tls = tls_enabled.then_some(DeviceTls {
            enabled: true,
            insecure_skip_verify: false,
        });
        s
    };
    // (spec, settings, transport or error reason, port)
    type Case<'a> = (
        CiscoDeviceSpec,
        &'a GnoiSettings,
        Result<Transport, &'a str>,
        Option<u16>,
    );
    let cases: Vec<Case> = vec![
        (
            with(TransportSecurity::Auto, None, false),
            &secure,
            Ok(Transport::Auto),
            None,
        ),
        (
            with(TransportSecurity::Auto, None, true),
            &lab,
            Ok(Transport::Tls),
            None,
        ),
        (
            with(TransportSecurity::Tls, Some(9339), false),
            &lab,
            Ok(Transport::Tls),
            Some(9339),
        ),
        (
            with(TransportSecurity::Insecure, Some(6000), false),
            &lab,
            Ok(Transport::Insecure),
            Some(6000),
        ),
        (
            with(TransportSecurity::Plaintext, None, false),
            &lab,
            Ok(Transport::Insecure),
            None,
        ),
        (
            with(TransportSecurity::Insecure, None, false),
            &secure,
            Err("InsecureTransportRefused"),
            None,
        ),
        (
            with(TransportSecurity::Auto, Some(0), false),
            &secure,
            Err("InvalidPort"),
            None,
        ),
    ];
    for (s, settings, want, port) in cases {
        match (build_target("n/d", &s, None, None, settings), want) {
            (Ok(t), Ok(tr)) => {
                assert_eq!(t.transport, tr, "{s:?}");
                assert_eq!(t.port, port, "{s:?}");
            }
            (Err(e), Err(reason)) => assert_eq!(e.reason(), reason, "{s:?}"),
            (got, want) => panic!("{s:?}: got {got:?}, want {want:?}"),
        }
    }
    // A non-standard management port is kept unless CISCO_VK_GNOI_PORT pins one.
    let mut s = spec();
    s.port = Some(57400);
    assert_eq!(
        build_target("n/d", &s, None, None, &secure).unwrap().port,
        Some(57400)
    );
    assert_eq!(
        build_target("n/d", &s, None, None, &pinned).unwrap().port,
        None
    );
    s.port = Some(443);
    assert_eq!(
        build_target("n/d", &s, None, None, &secure).unwrap().port,
        None
    );
}

#[test]
fn tls_material_from_the_secret() {
    let mut s = spec();
    s.gnoi = Some(GnoiConfig {
        port: None,
        transport_security: TransportSecurity::Tls,
        tls: Some(GnoiTls {
            secret_ref: LocalObjectRef::new("tls"),
            server_name: Some("sw1.lab".into()),
        }),
    });
    let ca_only = secret("tls", &[("ca.crt", "CA")]);
    let t = build_target("n/d", &s, None, Some(&ca_only), &insecure()).unwrap();
    assert_eq!(t.tls.ca_pem.as_deref(), Some("CA"));
    assert_eq!(t.tls.client_cert_pem, None);
    assert_eq!(t.tls.server_name.as_deref(), Some("sw1.lab"));
    assert!(!t.tls.insecure_skip_verify);

    let mtls = secret(
        "tls",
        &[("ca.crt", "CA"), ("tls.crt", "C"), ("tls.key", "K")],
    );
    let t = build_target("n/d", &s, None, Some(&mtls), &insecure()).unwrap();
    assert_eq!(t.tls.client_cert_pem.as_deref(), Some("C"));
    assert_eq!(t.tls.client_key_pem.as_deref(), Some("K"));

    let half = secret("tls", &[("ca.crt", "CA"), ("tls.crt", "C")]);
    let e = build_target("n/d", &s, None, Some(&half), &insecure()).unwrap_err();
    assert_eq!(e.reason(), "IncompleteClientPair");

    let no_ca = secret("tls", &[("tls.crt", "C"), ("tls.key", "K")]);
    let e = build_target("n/d", &s, None, Some(&no_ca), &insecure()).unwrap_err();
    assert!(e.to_string().contains("ca.crt"), "{e}");

    let mut lab = spec();
    lab.tls = Some(DeviceTls {
        enabled: true,
        insecure_skip_verify: true,
    });
    let t = build_target("n/d", &lab, None, None, &insecure()).unwrap();
    assert!(t.tls.insecure_skip_verify);
    assert_eq!(t.transport, Transport::Tls);
}

#[test]
fn only_the_xe_driver_is_driven() {
    let mut s = spec();
    s.driver = Driver::Nxos;
    let e = build_target("n/d", &s, None, None, &insecure()).unwrap_err();
    assert_eq!(e.reason(), "UnsupportedDriver");
    assert!(!e.is_transient());
}
