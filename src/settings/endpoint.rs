//! Where requests go: the API style, the DashScope region, the base URL (flag, job file,
//! environment, or the region's default) and the API key that must go with a remote one.

use std::fmt;

use super::key::ApiKey;
use super::{ConfigError, bad};
use crate::cli::{self, RunArgs};
use crate::request::api::Api;

/// Environment variable read for the base URL when neither the flag nor the job file sets it.
pub const ENV_BASE_URL: &str = "BATCHGEN_BASE_URL";
/// Default name of the environment variable holding the API key.
pub const DEFAULT_API_KEY_ENV: &str = "DASHSCOPE_API_KEY";

/// A DashScope region: its endpoint is the default base URL, and its price list prices the
/// run (Qwen's prices differ between the international, USD, and China, CNY, sites).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Region {
    /// Singapore (dashscope-intl.aliyuncs.com), international prices in USD.
    #[default]
    Intl,
    /// Beijing (dashscope.aliyuncs.com), China prices in CNY.
    Cn,
    /// Virginia (dashscope-us.aliyuncs.com), billed at the international prices.
    Us,
}

impl Region {
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Intl => "intl",
            Region::Cn => "cn",
            Region::Us => "us",
        }
    }

    /// The region whose price list this one uses: the US site has none of its own.
    pub fn price_list(self) -> Region {
        match self {
            Region::Intl | Region::Us => Region::Intl,
            Region::Cn => Region::Cn,
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<cli::Region> for Region {
    fn from(r: cli::Region) -> Region {
        match r {
            cli::Region::Intl => Region::Intl,
            cli::Region::Cn => Region::Cn,
            cli::Region::Us => Region::Us,
        }
    }
}

impl From<cli::ApiStyle> for Api {
    fn from(a: cli::ApiStyle) -> Api {
        match a {
            cli::ApiStyle::Chat => Api::Chat,
            cli::ApiStyle::Responses => Api::Responses,
            cli::ApiStyle::Dashscope => Api::Dashscope,
        }
    }
}

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The built-in simulated endpoint, started in-process on a free loopback port.
    Mock,
    Url(String),
}

/// The endpoint part of the settings.
pub(super) struct Target {
    pub api: Api,
    pub region: Region,
    pub endpoint: Endpoint,
    pub api_key_env: String,
    pub api_key: Option<ApiKey>,
}

/// Resolves the style, region, base URL and key. A remote endpoint needs a key; a loopback
/// one or the mock may go without.
pub(super) fn resolve(
    args: &RunArgs,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Target, ConfigError> {
    let api = args.api.map_or(Api::Chat, Api::from);
    let region = args.region.map_or(Region::Intl, Region::from);
    let base = args
        .base_url
        .clone()
        .or_else(|| env(ENV_BASE_URL).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| default_base_url(api, region));
    let endpoint = if base == "mock" {
        Endpoint::Mock
    } else if base.starts_with("http://") || base.starts_with("https://") {
        Endpoint::Url(base.trim_end_matches('/').to_string())
    } else {
        return Err(bad(format!(
            "--base-url: `{base}` is neither an http(s) URL nor `mock`"
        )));
    };

    let api_key_env = args
        .api_key_env
        .clone()
        .unwrap_or_else(|| DEFAULT_API_KEY_ENV.to_string());
    let api_key = env(&api_key_env)
        .filter(|k| !k.trim().is_empty())
        .map(|k| ApiKey::new(k.trim().to_string()));
    if let Endpoint::Url(url) = &endpoint
        && api_key.is_none()
        && !is_loopback(url)
    {
        return Err(bad(format!(
            "the environment variable {api_key_env} is not set: export your API key there, \
                 name another variable with --api-key-env, or rehearse with --base-url mock"
        )));
    }
    Ok(Target {
        api,
        region,
        endpoint,
        api_key_env,
        api_key,
    })
}

/// The default base URL of an API style in a DashScope region.
pub fn default_base_url(api: Api, region: Region) -> String {
    let host = match region {
        Region::Intl => "https://dashscope-intl.aliyuncs.com",
        Region::Cn => "https://dashscope.aliyuncs.com",
        Region::Us => "https://dashscope-us.aliyuncs.com",
    };
    match api {
        Api::Chat => format!("{host}/compatible-mode/v1"),
        Api::Responses => format!("{host}/api/v2/apps/protocols/compatible-mode/v1"),
        Api::Dashscope => format!("{host}/api/v1"),
    }
}

/// Whether a base URL points at this machine (a local server may need no key): its host, as
/// the URL parser reads it, is `localhost` or a loopback address (127.0.0.0/8, `::1`).
fn is_loopback(url: &str) -> bool {
    let Some(host) = url
        .parse::<hyper::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_owned))
    else {
        return false;
    };
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_read_from_the_parsed_host() {
        for url in [
            "http://127.0.0.1:9/v1",
            "http://127.1.2.3",
            "http://[::1]:8/v1",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in ["https://LocalHost/v1", "http://localhost:80"] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "http://127.evil.example/v1",
            "http://localhost.evil.example",
            "http://127.0.0.1@evil.example/",
            "http://[::2]/v1",
            "http://10.0.0.1/v1",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }
}
