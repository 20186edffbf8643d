//! Wire tests: each message is encoded and compared with bytes derived by
//! hand from the openconfig field numbers and wire types (tag = field << 3 |
//! wire type; 0 = varint, 2 = length-delimited). A wrong field number, type or
//! oneof arm changes the bytes, so these cannot pass by accident. Each vector
//! is also decoded back to the same message.

use cvk_proto::gnmi;
use cvk_proto::gnoi::{cert, file, os, system, types};
use prost::Message;

fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M, expected: &[u8]) {
    let got = msg.encode_to_vec();
    assert_eq!(
        hex::encode(&got),
        hex::encode(expected),
        "encoding of {msg:?} differs from the hand-derived bytes"
    );
    let back = M::decode(expected).expect("hand-derived bytes decode");
    assert_eq!(&back, msg, "decoding the hand-derived bytes");
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn install_request_transfer_request_with_package_size() {
    let msg = os::InstallRequest {
        request: Some(os::install_request::Request::TransferRequest(
            os::TransferRequest {
                version: "17.18.02".into(),
                standby_supervisor: false,
                package_size: 1_260_618_344,
            },
        )),
    };
    // TransferRequest: version (1, LEN) "17.18.02"; package_size (3, varint)
    // 1260618344 = e8 84 8e d9 04.
    let inner = concat(&[
        &[0x0a, 0x08],
        b"17.18.02",
        &[0x18, 0xe8, 0x84, 0x8e, 0xd9, 0x04],
    ]);
    assert_eq!(inner.len(), 16);
    // InstallRequest.transfer_request is field 1 (LEN).
    let expected = concat(&[&[0x0a, 0x10], &inner]);
    assert_wire(&msg, &expected);
}

#[test]
fn install_request_content_and_end() {
    let content = os::InstallRequest {
        request: Some(os::install_request::Request::TransferContent(
            prost::bytes::Bytes::from_static(b"\x00\x01\x02"),
        )),
    };
    // transfer_content is field 2 (LEN).
    assert_wire(&content, &[0x12, 0x03, 0x00, 0x01, 0x02]);

    let end = os::InstallRequest {
        request: Some(os::install_request::Request::TransferEnd(
            os::TransferEnd {},
        )),
    };
    // transfer_end is field 3 (LEN), an empty message.
    assert_wire(&end, &[0x1a, 0x00]);
}

#[test]
fn install_response_validated() {
    let msg = os::InstallResponse {
        response: Some(os::install_response::Response::Validated(os::Validated {
            version: "26.01.01.0.340".into(),
            description: "ok".into(),
        })),
    };
    // Validated: version (1) 14 bytes, description (2) 2 bytes => 20 bytes.
    let inner = concat(&[&[0x0a, 0x0e], b"26.01.01.0.340", &[0x12, 0x02], b"ok"]);
    assert_eq!(inner.len(), 0x14);
    // InstallResponse.validated is field 4 (LEN): tag 0x22.
    let expected = concat(&[&[0x22, 0x14], &inner]);
    assert_wire(&msg, &expected);
}

#[test]
fn install_response_other_arms() {
    let ready = os::InstallResponse {
        response: Some(os::install_response::Response::TransferReady(
            os::TransferReady {},
        )),
    };
    assert_wire(&ready, &[0x0a, 0x00]);

    let progress = os::InstallResponse {
        response: Some(os::install_response::Response::TransferProgress(
            os::TransferProgress {
                bytes_received: 1000,
            },
        )),
    };
    // transfer_progress (2) { bytes_received (1) = 1000 = e8 07 }
    assert_wire(&progress, &[0x12, 0x03, 0x08, 0xe8, 0x07]);

    let error = os::InstallResponse {
        response: Some(os::install_response::Response::InstallError(
            os::InstallError {
                r#type: os::install_error::Type::IntegrityFail as i32,
                detail: "bad".into(),
            },
        )),
    };
    // install_error (5, tag 0x2a) { type (1) = INTEGRITY_FAIL = 4, detail (2) }
    assert_wire(
        &error,
        &[0x2a, 0x07, 0x08, 0x04, 0x12, 0x03, b'b', b'a', b'd'],
    );
}

#[test]
fn install_error_and_activate_error_enum_values() {
    use os::install_error::Type;
    let expected = [
        (Type::Unspecified, 0),
        (Type::Incompatible, 1),
        (Type::TooLarge, 2),
        (Type::ParseFail, 3),
        (Type::IntegrityFail, 4),
        (Type::InstallRunPackage, 5),
        (Type::InstallInProgress, 6),
        (Type::UnexpectedSwitchover, 7),
        (Type::SyncFail, 8),
        (Type::NotSupportedOnBackup, 9),
    ];
    for (t, n) in expected {
        assert_eq!(t as i32, n, "{t:?}");
    }
    assert_eq!(os::activate_error::Type::NonExistentVersion as i32, 1);
    assert_eq!(os::activate_error::Type::NotSupportedOnBackup as i32, 2);
}

#[test]
fn activate_request_no_reboot() {
    let msg = os::ActivateRequest {
        version: "17.18.02.0.4112.1766116039".into(),
        standby_supervisor: false,
        no_reboot: true,
    };
    // version (1, LEN, 26 bytes); no_reboot (3, varint) = 1.
    let expected = concat(&[&[0x0a, 0x1a], b"17.18.02.0.4112.1766116039", &[0x18, 0x01]]);
    assert_wire(&msg, &expected);
}

#[test]
fn activate_response_error() {
    let msg = os::ActivateResponse {
        response: Some(os::activate_response::Response::ActivateError(
            os::ActivateError {
                r#type: os::activate_error::Type::NonExistentVersion as i32,
                detail: String::new(),
            },
        )),
    };
    // activate_error (2) { type (1) = 1 }
    assert_wire(&msg, &[0x12, 0x02, 0x08, 0x01]);
}

#[test]
fn verify_response() {
    let msg = os::VerifyResponse {
        version: "17.18.02.0.4112.1766116039".into(),
        activation_fail_message: "boot failed".into(),
        verify_standby: Some(os::VerifyStandby {
            state: Some(os::verify_standby::State::StandbyState(os::StandbyState {
                state: os::standby_state::State::NonExistent as i32,
            })),
        }),
        individual_supervisor_install: true,
    };
    let expected = concat(&[
        // version (1)
        &[0x0a, 0x1a],
        b"17.18.02.0.4112.1766116039",
        // activation_fail_message (2)
        &[0x12, 0x0b],
        b"boot failed",
        // verify_standby (3) { standby_state (1) { state (1) = NON_EXISTENT = 2 } }
        &[0x1a, 0x04, 0x0a, 0x02, 0x08, 0x02],
        // individual_supervisor_install (4) = true
        &[0x20, 0x01],
    ]);
    assert_wire(&msg, &expected);
}

#[test]
fn reboot_request_delay_and_method() {
    let msg = system::RebootRequest {
        method: system::RebootMethod::Cold as i32,
        delay: 5_000_000_000, // nanoseconds
        message: "maint".into(),
        subcomponents: vec![],
        force: true,
    };
    let expected = concat(&[
        // method (1) = COLD = 1
        &[0x08, 0x01],
        // delay (2) = 5e9 = 80 e4 97 d0 12
        &[0x10, 0x80, 0xe4, 0x97, 0xd0, 0x12],
        // message (3)
        &[0x1a, 0x05],
        b"maint",
        // force (5)
        &[0x28, 0x01],
    ]);
    assert_wire(&msg, &expected);
    assert_eq!(system::RebootMethod::Nsf as i32, 5);
    assert_eq!(system::RebootMethod::Powerup as i32, 7);
}

#[test]
fn reboot_status_response() {
    let msg = system::RebootStatusResponse {
        active: true,
        wait: 1000,
        when: 0,
        reason: "x".into(),
        count: 2,
        method: system::RebootMethod::Warm as i32,
        status: Some(system::RebootStatus {
            status: system::reboot_status::Status::Success as i32,
            message: String::new(),
        }),
    };
    let expected = [
        0x08, 0x01, // active (1)
        0x10, 0xe8, 0x07, // wait (2) = 1000
        0x22, 0x01, b'x', // reason (4)
        0x28, 0x02, // count (5)
        0x30, 0x04, // method (6) = WARM
        0x3a, 0x02, 0x08, 0x01, // status (7) { status (1) = SUCCESS }
    ];
    assert_wire(&msg, &expected);
}

#[test]
fn time_response() {
    let msg = system::TimeResponse {
        time: 1_700_000_000_000_000_123,
    };
    // time (1, varint)
    assert_wire(
        &msg,
        &[0x08, 0xfb, 0x80, 0xa8, 0xb1, 0xe3, 0x9f, 0xe7, 0xcb, 0x17],
    );
}

#[test]
fn kill_process_request() {
    let msg = system::KillProcessRequest {
        pid: 0,
        name: "dmiauthd".into(),
        signal: system::kill_process_request::Signal::Kill as i32,
        restart: true,
    };
    let expected = concat(&[&[0x12, 0x08], b"dmiauthd", &[0x18, 0x02, 0x20, 0x01]]);
    assert_wire(&msg, &expected);
}

#[test]
fn ping_response_summary() {
    let msg = system::PingResponse {
        source: String::new(),
        time: 0,
        sent: 5,
        received: 4,
        min_time: 0,
        avg_time: 0,
        max_time: 0,
        std_dev: 0,
        bytes: 64,
        sequence: 3,
        ttl: 0,
    };
    // sent (3) = 5, received (4) = 4, bytes (11, tag 0x58) = 64, sequence (12, tag 0x60) = 3
    assert_wire(&msg, &[0x18, 0x05, 0x20, 0x04, 0x58, 0x40, 0x60, 0x03]);
}

#[test]
fn put_request_open_contents_hash() {
    let open = file::PutRequest {
        request: Some(file::put_request::Request::Open(
            file::put_request::Details {
                remote_file: "flash:a.txt".into(),
                permissions: 644,
            },
        )),
    };
    // Details { remote_file (1) 11 bytes, permissions (2) = 644 = 84 05 } = 16 bytes
    let expected = concat(&[
        &[0x0a, 0x10, 0x0a, 0x0b],
        b"flash:a.txt",
        &[0x10, 0x84, 0x05],
    ]);
    assert_wire(&open, &expected);

    let contents = file::PutRequest {
        request: Some(file::put_request::Request::Contents(
            prost::bytes::Bytes::from_static(b"abc"),
        )),
    };
    assert_wire(&contents, &[0x12, 0x03, b'a', b'b', b'c']);

    let digest = [0xabu8; 32];
    let hash = file::PutRequest {
        request: Some(file::put_request::Request::Hash(types::HashType {
            method: types::hash_type::HashMethod::Sha256 as i32,
            hash: digest.to_vec(),
        })),
    };
    // hash (3) { method (1) = SHA256 = 1, hash (2) 32 raw bytes } = 36 bytes
    let expected = concat(&[&[0x1a, 0x24, 0x08, 0x01, 0x12, 0x20], &digest]);
    assert_wire(&hash, &expected);
    assert_eq!(types::hash_type::HashMethod::Md5 as i32, 3);
    assert_eq!(types::hash_type::HashMethod::Sha512 as i32, 2);
}

#[test]
fn stat_info() {
    let msg = file::StatInfo {
        path: "flash:x".into(),
        last_modified: 1000,
        permissions: 420,
        size: 123_456,
        umask: 18,
    };
    let expected = concat(&[
        &[0x0a, 0x07],
        b"flash:x",
        &[0x10, 0xe8, 0x07],       // last_modified (2)
        &[0x18, 0xa4, 0x03],       // permissions (3) = 420
        &[0x20, 0xc0, 0xc4, 0x07], // size (4) = 123456
        &[0x28, 0x12],             // umask (5) = 18
    ]);
    assert_wire(&msg, &expected);
    let resp = file::StatResponse { stats: vec![msg] };
    let mut framed = vec![0x0a, expected.len() as u8];
    framed.extend_from_slice(&expected);
    assert_wire(&resp, &framed);
}

#[test]
fn get_response_hash_arm() {
    let msg = file::GetResponse {
        response: Some(file::get_response::Response::Hash(types::HashType {
            method: types::hash_type::HashMethod::Md5 as i32,
            hash: vec![1, 2],
        })),
    };
    // hash is field 2 of GetResponse (contents is 1).
    assert_wire(&msg, &[0x12, 0x06, 0x08, 0x03, 0x12, 0x02, 0x01, 0x02]);
}

#[test]
fn can_generate_csr_response_uses_field_4() {
    let msg = cert::CanGenerateCsrResponse { can_generate: true };
    // The field number is 4 upstream, not 1: tag (4 << 3) | 0 = 0x20.
    assert_wire(&msg, &[0x20, 0x01]);
}

#[test]
fn can_generate_csr_request() {
    let msg = cert::CanGenerateCsrRequest {
        key_type: cert::KeyType::KtRsa as i32,
        certificate_type: cert::CertificateType::CtX509 as i32,
        key_size: 2048,
    };
    assert_wire(&msg, &[0x08, 0x01, 0x10, 0x01, 0x18, 0x80, 0x10]);
}

#[test]
fn factory_reset_start_request() {
    let msg = cvk_proto::gnoi::factory_reset::StartRequest {
        factory_os: true,
        zero_fill: false,
        retain_certs: true,
    };
    assert_wire(&msg, &[0x08, 0x01, 0x18, 0x01]);
}

#[test]
fn gnmi_capability_response() {
    let msg = gnmi::CapabilityResponse {
        supported_models: vec![gnmi::ModelData {
            name: "Cisco-IOS-XE-native".into(),
            organization: "Cisco Systems, Inc.".into(),
            version: "2024-03-01".into(),
        }],
        supported_encodings: vec![
            gnmi::Encoding::JsonIetf as i32,
            gnmi::Encoding::Proto as i32,
        ],
        g_nmi_version: "0.4.0".into(),
        extension: vec![],
    };
    let model = concat(&[
        &[0x0a, 0x13],
        b"Cisco-IOS-XE-native",
        &[0x12, 0x13],
        b"Cisco Systems, Inc.",
        &[0x1a, 0x0a],
        b"2024-03-01",
    ]);
    assert_eq!(model.len(), 0x36);
    let expected = concat(&[
        &[0x0a, 0x36],
        &model,
        // supported_encodings (2): proto3 packs repeated enums: JSON_IETF = 4, PROTO = 2
        &[0x12, 0x02, 0x04, 0x02],
        // gNMI_version (3)
        &[0x1a, 0x05],
        b"0.4.0",
    ]);
    assert_wire(&msg, &expected);
}

#[test]
#[allow(deprecated)] // gnmi.Path.element is deprecated upstream but still on the wire
fn gnmi_subscribe_request() {
    let msg = gnmi::SubscribeRequest {
        request: Some(gnmi::subscribe_request::Request::Subscribe(
            gnmi::SubscriptionList {
                prefix: None,
                subscription: vec![gnmi::Subscription {
                    path: Some(gnmi::Path {
                        element: vec![],
                        origin: String::new(),
                        elem: vec![
                            gnmi::PathElem {
                                name: "system".into(),
                                key: Default::default(),
                            },
                            gnmi::PathElem {
                                name: "state".into(),
                                key: Default::default(),
                            },
                        ],
                        target: String::new(),
                    }),
                    mode: gnmi::SubscriptionMode::Sample as i32,
                    sample_interval: 10_000_000_000,
                    suppress_redundant: false,
                    heartbeat_interval: 0,
                }],
                qos: None,
                mode: gnmi::subscription_list::Mode::Stream as i32,
                allow_aggregation: false,
                use_models: vec![],
                encoding: gnmi::Encoding::JsonIetf as i32,
                updates_only: false,
            },
        )),
        extension: vec![],
    };
    // Path { elem (3) {name "system"}, elem (3) {name "state"} } = 19 bytes
    let path = concat(&[
        &[0x1a, 0x08, 0x0a, 0x06],
        b"system",
        &[0x1a, 0x07, 0x0a, 0x05],
        b"state",
    ]);
    assert_eq!(path.len(), 19);
    // Subscription { path (1), mode (2) = SAMPLE = 2, sample_interval (3) = 1e10 }
    let sub = concat(&[
        &[0x0a, 0x13],
        &path,
        &[0x10, 0x02],
        &[0x18, 0x80, 0xc8, 0xaf, 0xa0, 0x25],
    ]);
    assert_eq!(sub.len(), 29);
    // SubscriptionList { subscription (2), mode STREAM = 0 omitted, encoding (8) = 4 }
    let list = concat(&[&[0x12, 0x1d], &sub, &[0x40, 0x04]]);
    assert_eq!(list.len(), 33);
    let expected = concat(&[&[0x0a, 0x21], &list]);
    assert_wire(&msg, &expected);

    let poll = gnmi::SubscribeRequest {
        request: Some(gnmi::subscribe_request::Request::Poll(gnmi::Poll {})),
        extension: vec![],
    };
    // poll is field 3 (field 4, aliases, is reserved upstream).
    assert_wire(&poll, &[0x1a, 0x00]);
}

#[test]
fn gnmi_typed_value_json_ietf_and_sync_response() {
    let v = gnmi::TypedValue {
        value: Some(gnmi::typed_value::Value::JsonIetfVal(b"{}".to_vec())),
    };
    assert_wire(&v, &[0x5a, 0x02, b'{', b'}']);
    let d = gnmi::TypedValue {
        value: Some(gnmi::typed_value::Value::DoubleVal(1.0)),
    };
    // double_val is field 14, wire type 1 (64-bit): tag 0x71.
    assert_wire(&d, &[0x71, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);
    let sync = gnmi::SubscribeResponse {
        response: Some(gnmi::subscribe_response::Response::SyncResponse(true)),
        extension: vec![],
    };
    assert_wire(&sync, &[0x18, 0x01]);
}
