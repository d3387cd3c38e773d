//! The vendor client: signs, paces, sends and classifies every call.
//!
//! One `TencentClient` is shared by every task: its pacers are the per-API
//! rate limits, its sig cache is the one UserSig in use.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;

use super::api::{Api, VendorResponse};
use super::errors::{ApiError, ApiErrorKind, ErrorClass};
use super::pacer::Pacer;
use super::usersig;
use crate::config::TencentSettings;
use crate::metrics::Metrics;

/// How often and how patiently to retry; tests compress it.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries of transient failures (after the first attempt).
    pub max_retries: u32,
    /// Retries after a rate-limit answer.
    pub max_backoffs: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            max_backoffs: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with ±25% jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << attempt.min(16));
        let capped = exp.min(self.max_delay);
        let jitter = rand::thread_rng().gen_range(0.75..1.25);
        capped.mul_f64(jitter)
    }
}

/// How a call treats failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Patience {
    /// Retries transient failures and rate limits per the `RetryPolicy`.
    Retry,
    /// One request (a refused sig is renewed and sent again).
    Once,
}

/// The signed part of every request's query string, rebuilt only when the
/// sig is renewed (percent-encoding it per request is measurable CPU).
struct CachedSig {
    query: String,
    renew_at: Instant,
}

/// The client of the moment, for long-lived holders (the propagator): a
/// reload that changes `[tencent]` (key, region, rate) swaps it, and each
/// holder picks the new one up at its next pass.
#[derive(Clone)]
pub struct SharedClient(Arc<std::sync::RwLock<Arc<TencentClient>>>);

impl SharedClient {
    pub fn new(client: Arc<TencentClient>) -> Self {
        SharedClient(Arc::new(std::sync::RwLock::new(client)))
    }

    pub fn get(&self) -> Arc<TencentClient> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, client: Arc<TencentClient>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = client;
    }
}

impl From<Arc<TencentClient>> for SharedClient {
    fn from(client: Arc<TencentClient>) -> Self {
        SharedClient::new(client)
    }
}

pub struct TencentClient {
    http: reqwest::Client,
    settings: TencentSettings,
    sig: Mutex<Option<CachedSig>>,
    pacers: Vec<Pacer>,
    /// `{base}/v4/{api}` for every base URL and API, parsed once: parsing
    /// a URL (host normalisation included) on every request cost more than
    /// a page's JSON. Indexed `[base][api]`.
    endpoints: Vec<Vec<Result<reqwest::Url, String>>>,
    preferred_base: AtomicUsize,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl TencentClient {
    pub fn new(settings: TencentSettings, metrics: Arc<Metrics>) -> Self {
        Self::with_retry(settings, metrics, RetryPolicy::default())
    }

    pub fn with_retry(
        settings: TencentSettings,
        metrics: Arc<Metrics>,
        retry: RetryPolicy,
    ) -> Self {
        let mut http = reqwest::Client::builder();
        // The system's trust store (and the bundled roots), plus the
        // operator's own CA for a proxy or gateway.
        for cert in settings
            .ca_pem
            .as_deref()
            .map(|pem| reqwest::Certificate::from_pem_bundle(pem).unwrap_or_default())
            .unwrap_or_default()
        {
            http = http.add_root_certificate(cert);
        }
        let http = http
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(256)
            .user_agent(concat!("bansync/", env!("CARGO_PKG_VERSION")))
            // The request URL carries the UserSig: never re-send it to
            // another address, nor name it in a Referer. A 3xx is an error.
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .build()
            .expect("TLS backend initialises");
        // One grid for all APIs: at equal rates their slots coincide, so one
        // timer wake-up sends to each (see pacer.rs).
        let origin = tokio::time::Instant::now();
        let pacers = Api::ALL
            .iter()
            .map(|api| {
                let rate = api
                    .vendor_limit()
                    .map_or(settings.requests_per_second, |l| {
                        l.min(settings.requests_per_second)
                    });
                Pacer::on_grid_from(rate, origin)
            })
            .collect();
        let endpoints = settings
            .base_urls
            .iter()
            .map(|base| {
                Api::ALL
                    .iter()
                    .map(|api| {
                        reqwest::Url::parse(&format!("{base}/v4/{}", api.path()))
                            .map_err(|e| format!("base URL `{base}`: {e}"))
                    })
                    .collect()
            })
            .collect();
        TencentClient {
            http,
            endpoints,
            settings,
            sig: Mutex::new(None),
            pacers,
            preferred_base: AtomicUsize::new(0),
            retry,
            metrics,
        }
    }

    pub fn settings(&self) -> &TencentSettings {
        &self.settings
    }

    pub fn pacer(&self, api: Api) -> &Pacer {
        &self.pacers[api.index()]
    }

    /// Halves this client's rate for `api` for `period` (the vendor's
    /// `Alert.RequestOverLimit`: the app as a whole is near the limit).
    pub fn slow_down(&self, api: Api, period: Duration) {
        tracing::warn!(
            api = api.path(),
            for_s = period.as_secs(),
            "the vendor says this API is near its limit: halving bansync's rate for it"
        );
        self.pacer(api).slow_down(period);
    }

    /// The signed part of the query string (sdkappid, identifier, usersig),
    /// rebuilt when the sig is renewed: once half its lifetime has passed,
    /// so a long walk never runs into its expiry. Encoding it once instead of
    /// per request is measurable CPU at 600 requests/s.
    fn signed_query(&self) -> String {
        let mut slot = self.sig.lock().unwrap();
        if let Some(c) = slot.as_ref()
            && Instant::now() < c.renew_at
        {
            return c.query.clone();
        }
        let t = &self.settings;
        let ttl = t.usersig_ttl.as_secs();
        let sig = usersig::generate(
            t.secret_key.expose(),
            t.sdkappid,
            &t.identifier,
            ttl,
            crate::clock::Clock::system().now_s() as u64,
            None,
        );
        let sdkappid = t.sdkappid.to_string();
        let params = [
            ("sdkappid", sdkappid.as_str()),
            ("identifier", t.identifier.as_str()),
            ("usersig", sig.as_str()),
        ];
        let query = reqwest::Url::parse_with_params("http://query.invalid/", params)
            .expect("a static URL parses")
            .query()
            .unwrap_or_default()
            .to_string();
        *slot = Some(CachedSig {
            query: query.clone(),
            renew_at: Instant::now() + t.usersig_ttl / 2,
        });
        query
    }

    fn invalidate_sig(&self) {
        *self.sig.lock().unwrap() = None;
    }

    /// Calls `api` with `body`, retrying transient failures, backing off on
    /// rate limits and renewing the sig once if it is refused.
    pub async fn call<T: VendorResponse>(
        &self,
        api: Api,
        body: &impl Serialize,
    ) -> Result<T, ApiError> {
        self.call_with(api, body, Patience::Retry).await
    }

    /// Calls `api` with `body` as one request: only a refused sig is
    /// renewed and sent again (the vendor did not act on it). For requests
    /// whose caller retries on its own terms, re-checking before each
    /// attempt whether it is still wanted (mirror actions).
    pub async fn call_once<T: VendorResponse>(
        &self,
        api: Api,
        body: &impl Serialize,
    ) -> Result<T, ApiError> {
        self.call_with(api, body, Patience::Once).await
    }

    /// The longest one request can take from the call to its answer
    /// (sig renewal included), for callers that must bound it.
    pub fn max_request_duration(&self) -> Duration {
        self.settings.timeout * 2
    }

    async fn call_with<T: VendorResponse>(
        &self,
        api: Api,
        body: &impl Serialize,
        patience: Patience,
    ) -> Result<T, ApiError> {
        let (max_retries, max_backoffs) = match patience {
            Patience::Retry => (self.retry.max_retries, self.retry.max_backoffs),
            Patience::Once => (0, 0),
        };
        let payload = serde_json::to_vec(body).expect("request bodies serialize");
        let mut retries = 0;
        let mut backoffs = 0;
        let mut renewed = false;
        loop {
            self.pacer(api).acquire().await;
            let started = Instant::now();
            let result = self.send_once::<T>(api, &payload).await;
            let e = match result {
                Ok(r) => {
                    self.metrics.api_request(api.path(), "0", started.elapsed());
                    return Ok(r);
                }
                Err(e) => e,
            };
            self.metrics
                .api_request(api.path(), &e.metric_code(), started.elapsed());
            match e.class() {
                ErrorClass::RenewSig if !renewed => {
                    tracing::warn!(api = api.path(), error = %e, "UserSig refused; generating a new one");
                    self.invalidate_sig();
                    renewed = true;
                }
                ErrorClass::Retry if retries < max_retries => {
                    if matches!(e.kind, ApiErrorKind::Transport(_)) {
                        self.rotate_base();
                    }
                    let d = self.retry.delay(retries);
                    tracing::debug!(api = api.path(), error = %e, retry_in_ms = d.as_millis() as u64, "transient failure");
                    retries += 1;
                    tokio::time::sleep(d).await;
                }
                ErrorClass::BackOff if backoffs < max_backoffs => {
                    // 70050 asks for at least a minute. Other codes mean the
                    // rolling second was overrun: a short pause lets it slide
                    // (100 ms, doubling), where a long one would idle the API.
                    let d = if e.code() == Some(70050) {
                        Duration::from_secs(60).max(self.retry.delay(backoffs))
                    } else {
                        Duration::from_millis(100 << backoffs.min(8))
                            .min(self.retry.max_delay.max(Duration::from_millis(100)))
                    };
                    tracing::warn!(api = api.path(), error = %e, pause_ms = d.as_millis() as u64, "rate limited; slowing this API");
                    backoffs += 1;
                    self.pacer(api).hold(d);
                }
                _ => return Err(e),
            }
        }
    }

    fn rotate_base(&self) {
        let n = self.settings.base_urls.len();
        if n > 1 {
            self.preferred_base.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn url(&self, api: Api) -> Result<reqwest::Url, String> {
        let bases = &self.endpoints;
        let base = &bases[self.preferred_base.load(Ordering::Relaxed) % bases.len()];
        let mut url = base[api.index()].clone()?;
        let random: u32 = rand::thread_rng().r#gen();
        url.set_query(Some(&format!(
            "{}&random={random}&contenttype=json",
            self.signed_query()
        )));
        Ok(url)
    }

    async fn send_once<T: VendorResponse>(&self, api: Api, payload: &[u8]) -> Result<T, ApiError> {
        let fail = |kind| ApiError {
            api: api.path(),
            kind,
            request_id: None,
        };
        let url = self
            .url(api)
            .map_err(|e| fail(ApiErrorKind::Transport(e)))?;
        let response = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(payload.to_vec())
            .send()
            .await
            .map_err(|e| fail(ApiErrorKind::Transport(transport_error(e))))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(fail(ApiErrorKind::Http(status.as_u16())));
        }
        let bytes = read_capped(response, MAX_BODY_BYTES).await.map_err(fail)?;
        let parsed: T = serde_json::from_slice(&bytes)
            .map_err(|e| fail(ApiErrorKind::Malformed(e.to_string())))?;
        check_envelope(api, parsed)
    }
}

/// The largest vendor answer read: a page of 1000 blocklist entries is
/// about 100 KiB; anything far larger is not a page, and up to 64 walks
/// read at once.
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// The longest `ErrorInfo` kept (it reaches logs, `status` and webhooks).
pub const MAX_ERROR_INFO_CHARS: usize = 200;

/// Reads a body chunk by chunk, giving up past `cap` bytes (whatever
/// `Content-Length` claims).
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, ApiErrorKind> {
    let too_big = || ApiErrorKind::Malformed(format!("body larger than {} KiB", cap >> 10));
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_big());
    }
    let mut out = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ApiErrorKind::Transport(transport_error(e)))?
    {
        if out.len() + chunk.len() > cap {
            return Err(too_big());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A transport error with its causes ("error sending request: connection
/// refused", "...: invalid peer certificate: UnknownIssuer"), without the
/// URL, which carries the UserSig and must not be logged.
fn transport_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// `ErrorInfo` as it may be shown: control characters replaced, cut to
/// [`MAX_ERROR_INFO_CHARS`].
fn clean_info(info: &str) -> String {
    let mut out: String = info
        .chars()
        .take(MAX_ERROR_INFO_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if info.chars().count() > MAX_ERROR_INFO_CHARS {
        out.push('…');
    }
    out
}

/// A body is a success only if it says so consistently.
pub fn check_envelope<T: VendorResponse>(api: Api, parsed: T) -> Result<T, ApiError> {
    let env = parsed.envelope();
    let request_id = env.request_id.map(str::to_string);
    let err = |kind| {
        Err(ApiError {
            api: api.path(),
            kind,
            request_id: request_id.clone(),
        })
    };
    match (env.error_code, env.action_status) {
        (Some(0), Some("OK") | None) | (None, Some("OK")) => Ok(parsed),
        (Some(0), Some(other)) => err(ApiErrorKind::Malformed(format!(
            "ErrorCode 0 with ActionStatus `{other}`"
        ))),
        (Some(code), _) => err(ApiErrorKind::Vendor {
            code,
            info: clean_info(env.error_info.unwrap_or_default()),
        }),
        (None, _) => err(ApiErrorKind::Malformed(
            "neither ErrorCode nor ActionStatus OK".into(),
        )),
    }
}
