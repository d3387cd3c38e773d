//! UserSig, the vendor's TLSSigAPIv2 token: generation as the official
//! libraries do it, and decoding plus verification as the vendor's server
//! does it (the simulator and the tests use that half).

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The fields of a decoded sig.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigFields {
    #[serde(rename = "TLS.ver")]
    pub ver: String,
    #[serde(rename = "TLS.identifier")]
    pub identifier: String,
    #[serde(rename = "TLS.sdkappid")]
    pub sdkappid: u64,
    #[serde(rename = "TLS.expire")]
    pub expire: u64,
    #[serde(rename = "TLS.time")]
    pub time: u64,
    #[serde(
        rename = "TLS.userbuf",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub userbuf: Option<String>,
    #[serde(rename = "TLS.sig")]
    pub sig: String,
}

/// Why a sig was refused, each mapped to the code the vendor answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("UserSig is empty")]
    Empty,
    #[error("UserSig cannot be decoded")]
    Malformed,
    #[error("UserSig has expired")]
    Expired,
    #[error("UserSig was issued for another identifier")]
    IdentifierMismatch,
    #[error("UserSig was issued for another SDKAppID")]
    AppMismatch,
    #[error("UserSig signature does not verify")]
    BadSignature,
}

impl SigError {
    pub fn vendor_code(self) -> i64 {
        match self {
            SigError::Empty => 70002,
            SigError::Malformed => 70003,
            SigError::Expired => 70001,
            SigError::IdentifierMismatch => 70013,
            SigError::AppMismatch => 70014,
            SigError::BadSignature => 70009,
        }
    }
}

fn hmac_content(
    identifier: &str,
    sdkappid: u64,
    time: u64,
    expire: u64,
    userbuf: Option<&str>,
) -> String {
    let mut content = format!(
        "TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{time}\nTLS.expire:{expire}\n"
    );
    if let Some(b) = userbuf {
        content.push_str("TLS.userbuf:");
        content.push_str(b);
        content.push('\n');
    }
    content
}

/// `TLS.sig`: standard base64 of HMAC-SHA256 over the content, keyed by the
/// secret's UTF-8 bytes (not hex-decoded).
pub fn hmac_sig(
    key: &str,
    identifier: &str,
    sdkappid: u64,
    time: u64,
    expire: u64,
    userbuf: Option<&str>,
) -> String {
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC accepts any key length");
    mac.update(hmac_content(identifier, sdkappid, time, expire, userbuf).as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Generates a UserSig valid for `expire` seconds from `time`.
pub fn generate(
    key: &str,
    sdkappid: u64,
    identifier: &str,
    expire: u64,
    time: u64,
    userbuf: Option<&[u8]>,
) -> String {
    let userbuf = userbuf.map(|b| STANDARD.encode(b));
    let fields = SigFields {
        ver: "2.0".into(),
        identifier: identifier.into(),
        sdkappid,
        expire,
        time,
        sig: hmac_sig(key, identifier, sdkappid, time, expire, userbuf.as_deref()),
        userbuf,
    };
    let json = serde_json::to_vec(&fields).expect("plain struct serializes");
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&json).expect("writing to a Vec cannot fail");
    let compressed = z.finish().expect("writing to a Vec cannot fail");
    to_url_base64(&STANDARD.encode(compressed))
}

/// The vendor's URL-safe alphabet: `+`→`*`, `/`→`-`, `=`→`_`.
fn to_url_base64(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect()
}

fn from_url_base64(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect()
}

/// Decodes a sig into its fields without checking it.
pub fn decode(sig: &str) -> Result<SigFields, SigError> {
    if sig.is_empty() {
        return Err(SigError::Empty);
    }
    let compressed = STANDARD
        .decode(from_url_base64(sig))
        .map_err(|_| SigError::Malformed)?;
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(&compressed[..])
        .take(64 * 1024)
        .read_to_end(&mut json)
        .map_err(|_| SigError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| SigError::Malformed)
}

/// Verifies a sig as the vendor does: app, identifier, expiry, then HMAC.
pub fn verify(
    sig: &str,
    key: &str,
    sdkappid: u64,
    identifier: &str,
    now: u64,
) -> Result<SigFields, SigError> {
    let f = decode(sig)?;
    if f.sdkappid != sdkappid {
        return Err(SigError::AppMismatch);
    }
    if f.identifier != identifier {
        return Err(SigError::IdentifierMismatch);
    }
    let expected = hmac_sig(
        key,
        &f.identifier,
        f.sdkappid,
        f.time,
        f.expire,
        f.userbuf.as_deref(),
    );
    // Compare in constant time through the MAC's own verifier.
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC accepts any key length");
    mac.update(
        hmac_content(
            &f.identifier,
            f.sdkappid,
            f.time,
            f.expire,
            f.userbuf.as_deref(),
        )
        .as_bytes(),
    );
    let given = STANDARD
        .decode(&f.sig)
        .map_err(|_| SigError::BadSignature)?;
    if mac.verify_slice(&given).is_err() {
        debug_assert_ne!(expected, f.sig);
        return Err(SigError::BadSignature);
    }
    if now > f.time.saturating_add(f.expire) {
        return Err(SigError::Expired);
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
    const VEC_PLAIN: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkElNyM-NgUsUp2YkFBZkpQAlDEwMogMqlVhRkFqUCZSzMTOCCJZm5ICFDczTFxZnpIMNNckIrCt30nbQDg-XdMqpCjS0sfMPLTcyLjdw9vdMLQpzdDMNzw330c0wjbZVqAeD3MM0_";
    const VEC_USERBUF: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkElNyM-NgUsUp2YkFBZkpQAlDEwMogMqlVhRkFqUCZSzMTOCCJZm5ICFDczTFpcWpRUmlaSALIsO9suDmZ6aDhLzzfS1zTVzNInIjnQNDTBKDAy3DLMzdTKPcXAq0I93Dq7It06JMjMwyTdNtlWoBjlo3Vw__";

    #[test]
    fn hmac_matches_official_vectors() {
        assert_eq!(
            hmac_sig(KEY, "admin", 1400000000, 1700000000, 86400, None),
            "4lUxqF/B+QS/FhzU388MWw47s2GIKgpTCF1WmWL/l5Y="
        );
        assert_eq!(
            hmac_sig(KEY, "admin", 1400000000, 1700000000, 86400, Some("YWJj")),
            "KoM9m4E6XmYCQT4aSQ9V87F5ZFDp+YGWzk9fZ426i5g="
        );
    }

    #[test]
    fn official_whole_sigs_decode_and_verify() {
        let f = verify(VEC_PLAIN, KEY, 1400000000, "admin", 1700000000).unwrap();
        assert_eq!(
            (f.ver.as_str(), f.expire, f.time, f.userbuf),
            ("2.0", 86400, 1700000000, None)
        );
        assert_eq!(f.sig, "4lUxqF/B+QS/FhzU388MWw47s2GIKgpTCF1WmWL/l5Y=");
        let f = verify(VEC_USERBUF, KEY, 1400000000, "admin", 1700000000).unwrap();
        assert_eq!(f.userbuf.as_deref(), Some("YWJj"));
        assert_eq!(f.sig, "KoM9m4E6XmYCQT4aSQ9V87F5ZFDp+YGWzk9fZ426i5g=");
    }

    #[test]
    fn generated_sigs_carry_the_official_hmac() {
        let ours = generate(KEY, 1400000000, "admin", 86400, 1700000000, None);
        assert_eq!(decode(&ours).unwrap(), decode(VEC_PLAIN).unwrap());
        let ours = generate(KEY, 1400000000, "admin", 86400, 1700000000, Some(b"abc"));
        assert_eq!(decode(&ours).unwrap(), decode(VEC_USERBUF).unwrap());
        assert!(!ours.contains(['+', '/', '=']));
    }

    #[test]
    fn verification_refuses_each_fault() {
        let sig = generate(KEY, 1400000000, "admin", 100, 1000, None);
        assert_eq!(
            verify(&sig, KEY, 1400000000, "admin", 1100).map(|_| ()),
            Ok(())
        );
        assert_eq!(
            verify(&sig, KEY, 1400000000, "admin", 1101).unwrap_err(),
            SigError::Expired
        );
        assert_eq!(
            verify(&sig, "other", 1400000000, "admin", 1000).unwrap_err(),
            SigError::BadSignature
        );
        assert_eq!(
            verify(&sig, KEY, 1400000001, "admin", 1000).unwrap_err(),
            SigError::AppMismatch
        );
        assert_eq!(
            verify(&sig, KEY, 1400000000, "root", 1000).unwrap_err(),
            SigError::IdentifierMismatch
        );
        assert_eq!(
            verify("", KEY, 1400000000, "admin", 1000).unwrap_err(),
            SigError::Empty
        );
        assert_eq!(
            verify(&sig[..20], KEY, 1400000000, "admin", 1000).unwrap_err(),
            SigError::Malformed
        );
    }
}
