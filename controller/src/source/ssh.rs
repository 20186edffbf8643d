//! Interim: this scheme's client lands in the next commit of the sources branch.
#![allow(unused_imports)]
use super::cache::Sink;
use super::url::SourceUrl;
use super::{SourceError, SourceSettings, UrlCredentials};

pub(crate) async fn fetch(
    url: &SourceUrl,
    _credentials: Option<&UrlCredentials>,
    _settings: &SourceSettings,
    _sink: &mut Sink<'_>,
) -> Result<(), SourceError> {
    Err(SourceError::UnsupportedScheme {
        scheme: format!("{} (client not built yet)", url.scheme.as_str()),
    })
}
