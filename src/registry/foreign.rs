//! Foreign (non-distributable) layers fetched from the URLs their
//! descriptors list: plain GETs, no registry credentials, only when the
//! options allow it.

use super::settings::Settings;
use super::{guard, http, source, tls};
use crate::error::Result;
use reqwest::Response;

/// GET `url`, from the Range `range` names when resuming.
pub async fn open(
    settings: &Settings,
    url: &reqwest::Url,
    range: Option<&(&str, String)>,
    what: &str,
) -> Result<Response> {
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => String::new(),
    };
    let shown = guard::shown(url);
    let mut req = tls::client_for(settings, &host)?.get(url.clone());
    if let Some((k, v)) = range {
        req = req.header(*k, v);
    }
    let what = format!("{what} from {shown}");
    let resp = req.send().await.map_err(|e| http::network(&what, &e))?;
    if super::ok_blob(&resp) {
        Ok(resp)
    } else {
        Err(source::fail(resp, &what).await)
    }
}
