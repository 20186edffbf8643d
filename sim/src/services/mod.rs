//! gRPC services. Handlers are thin: check the request, call the device
//! model, convert the answer. Which services exist is the profile's choice;
//! a service left out answers UNIMPLEMENTED (tonic's router does that).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::service::{Routes, RoutesBuilder};

use crate::device::Device;
use crate::profile::ServiceKind;

pub mod cert;
pub mod factory_reset;
pub mod file;
pub mod gnmi;
pub mod os;
pub mod system;

type AddReflection = Arc<dyn Fn(&mut RoutesBuilder) + Send + Sync>;

/// The reflection services every device serves.
const REFLECTION: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// gRPC reflection services, built once per set of served services and
/// shared by every device with that set (they hold a parsed descriptor pool).
#[derive(Default)]
pub struct Reflection {
    cache: Mutex<HashMap<Vec<&'static str>, AddReflection>>,
}

impl Reflection {
    fn adder(&self, names: Vec<&'static str>) -> AddReflection {
        let mut c = self.cache.lock().unwrap();
        c.entry(names.clone())
            .or_insert_with(|| {
                // Both versions list both reflection services (grpcurl asks
                // v1, grpcio-reflection clients v1alpha).
                let mut v1 = tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(cvk_proto::FILE_DESCRIPTOR_SET);
                let mut v1a = tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(cvk_proto::FILE_DESCRIPTOR_SET);
                for n in REFLECTION.iter().chain(&names) {
                    v1 = v1.with_service_name(*n);
                    v1a = v1a.with_service_name(*n);
                }
                let v1 = v1.build_v1().expect("descriptor set of cvk-proto is valid");
                let v1a = v1a
                    .build_v1alpha()
                    .expect("descriptor set of cvk-proto is valid");
                Arc::new(move |b: &mut RoutesBuilder| {
                    b.add_service(v1.clone());
                    b.add_service(v1a.clone());
                })
            })
            .clone()
    }
}

/// The tonic routes for a device's profile.
pub fn routes(dev: &Arc<Device>, reflection: &Reflection) -> Routes {
    let p = dev.profile().clone();
    let max = p.max_message_bytes;
    let mut b = RoutesBuilder::default();
    let mut names = Vec::new();
    for kind in &p.services {
        names.push(kind.grpc_name());
        match kind {
            ServiceKind::System => {
                b.add_service(
                    cvk_proto::gnoi::system::system_server::SystemServer::new(
                        system::SystemService::new(dev.clone()),
                    )
                    .max_decoding_message_size(max),
                );
            }
            ServiceKind::File => {
                b.add_service(
                    cvk_proto::gnoi::file::file_server::FileServer::new(file::FileService::new(
                        dev.clone(),
                    ))
                    .max_decoding_message_size(max),
                );
            }
            ServiceKind::Os => {
                b.add_service(
                    cvk_proto::gnoi::os::os_server::OsServer::new(os::OsService::new(dev.clone()))
                        .max_decoding_message_size(max),
                );
            }
            ServiceKind::Cert => {
                b.add_service(
                    cvk_proto::gnoi::cert::certificate_management_server::CertificateManagementServer::new(
                        cert::CertService::new(dev.clone()),
                    )
                    .max_decoding_message_size(max),
                );
            }
            ServiceKind::FactoryReset => {
                b.add_service(
                    cvk_proto::gnoi::factory_reset::factory_reset_server::FactoryResetServer::new(
                        factory_reset::FactoryResetService::new(dev.clone()),
                    )
                    .max_decoding_message_size(max),
                );
            }
            ServiceKind::Gnmi => {
                b.add_service(
                    cvk_proto::gnmi::g_nmi_server::GNmiServer::new(gnmi::GnmiService::new(
                        dev.clone(),
                    ))
                    .max_decoding_message_size(max),
                );
            }
        }
    }
    names.sort();
    (reflection.adder(names))(&mut b);
    b.routes()
}

/// Journal notes from a tonic request.
pub(crate) fn note<T>(req: &tonic::Request<T>, key: &str, value: impl ToString) {
    crate::journal::note(req.extensions(), key, value);
}

/// Journal notes handle, for handlers that move the request into a task.
pub(crate) fn notes<T>(req: &tonic::Request<T>) -> Option<crate::journal::CallNotes> {
    req.extensions().get::<crate::journal::CallNotes>().cloned()
}
