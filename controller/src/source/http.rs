//! `http://` and `https://` (rustls with ring; native roots plus an optional
//! extra CA). Follows up to five redirects; Content-Length is the announced
//! size.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::sink::Sink;
use super::url::{Scheme, SourceUrl};
use super::{SourceError, SourceSettings};

const MAX_REDIRECTS: usize = 5;

/// One HTTP(S) client per cache (connection pool shared by downloads).
pub(crate) struct HttpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl HttpClient {
    pub(crate) fn new(settings: &SourceSettings) -> Result<Self, SourceError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        if let Some(pem) = &settings.extra_ca_pem {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| SourceError::io("extra CA PEM", e))?;
            if certs.is_empty() {
                return Err(SourceError::io("extra CA PEM", "holds no certificate"));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| SourceError::io("extra CA certificate", e))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| SourceError::io("TLS configuration", e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_nodelay(true);
        http.set_recv_buffer_size(Some(4 * 1024 * 1024));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { client })
    }

    pub(crate) async fn fetch(
        &self,
        url: &SourceUrl,
        settings: &SourceSettings,
        sink: &mut Sink<'_>,
    ) -> Result<(), SourceError> {
        let unreachable = |detail: String| SourceError::Unreachable {
            url: url.url.clone(),
            detail,
        };
        let mut current: http::Uri = url.url.parse().map_err(|e| SourceError::InvalidUrl {
            url: url.url.clone(),
            reason: format!("{e}"),
        })?;
        let mut redirects = 0;
        let response = loop {
            let req = http::Request::get(current.clone())
                .header(http::header::USER_AGENT, "cvk-controller")
                .body(Empty::<Bytes>::new())
                .map_err(|e| SourceError::InvalidUrl {
                    url: url.url.clone(),
                    reason: e.to_string(),
                })?;
            let resp = tokio::time::timeout(
                settings.connect_timeout + settings.idle_timeout,
                self.client.request(req),
            )
            .await
            .map_err(|_| unreachable("no response headers in time".into()))?
            .map_err(|e| unreachable(error_chain(&e)))?;
            let status = resp.status();
            if status.is_redirection() {
                redirects += 1;
                let location = resp
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| SourceError::Protocol {
                        url: url.url.clone(),
                        detail: format!("{status} without a Location header"),
                    })?;
                if redirects > MAX_REDIRECTS {
                    return Err(SourceError::Protocol {
                        url: url.url.clone(),
                        detail: format!("more than {MAX_REDIRECTS} redirects"),
                    });
                }
                current = resolve(&current, location).ok_or_else(|| SourceError::Protocol {
                    url: url.url.clone(),
                    detail: format!("bad redirect Location '{location}'"),
                })?;
                if url.scheme == Scheme::Https && current.scheme_str() != Some("https") {
                    return Err(SourceError::Protocol {
                        url: url.url.clone(),
                        detail: format!("refusing a redirect from https to '{current}'"),
                    });
                }
                continue;
            }
            break resp;
        };
        let status = response.status();
        match status.as_u16() {
            200 => {}
            404 | 410 => {
                return Err(SourceError::NotFound {
                    url: url.url.clone(),
                    detail: format!("HTTP {status}"),
                });
            }
            401 | 403 => {
                return Err(SourceError::AuthFailed {
                    url: url.url.clone(),
                    detail: format!("HTTP {status}"),
                });
            }
            408 | 429 | 500..=599 => return Err(unreachable(format!("HTTP {status}"))),
            _ => {
                return Err(SourceError::Protocol {
                    url: url.url.clone(),
                    detail: format!("unexpected HTTP {status}"),
                });
            }
        }
        let length = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(len) = length {
            sink.announce_total(len)?;
        }
        let mut body = response.into_body();
        loop {
            let frame = tokio::time::timeout(settings.idle_timeout, body.frame())
                .await
                .map_err(|_| {
                    unreachable(format!(
                        "no data for {} s after {} bytes",
                        settings.idle_timeout.as_secs(),
                        sink.written()
                    ))
                })?;
            match frame {
                None => break,
                Some(Err(e)) => {
                    return Err(unreachable(format!(
                        "connection broke after {} bytes: {}",
                        sink.written(),
                        error_chain(&e)
                    )));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        sink.write(&data).await?;
                    }
                }
            }
        }
        if let Some(len) = length
            && sink.written() != len
        {
            return Err(unreachable(format!(
                "connection closed after {} of {len} bytes",
                sink.written()
            )));
        }
        Ok(())
    }
}

/// Resolves a Location header against the request URI.
fn resolve(base: &http::Uri, location: &str) -> Option<http::Uri> {
    let base = ::url::Url::parse(&base.to_string()).ok()?;
    base.join(location).ok()?.as_str().parse().ok()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
