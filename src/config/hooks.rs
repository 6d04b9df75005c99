//! `[supabase]` and `[zitadel]`: the identity-server adapters (`src/http/hooks/`), each off
//! unless `enabled = true`.
//!
//! Both secrets are HMAC keys that let a caller send texts, so they come from files only (mode
//! 0600, as `pin_file`), never inline: a config file is often world-readable and committed.
//! [`SupabaseSettings::secrets`] and [`ZitadelSettings::signing_key`] read them; `serve`,
//! `config check` and `doctor` all reach them through `Config::check_startup`, so the three
//! agree on a bad file. `Debug` shows paths, never keys.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

/// `[supabase]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSupabase {
    /// `supabase.enabled`: serve `POST /hooks/supabase/send-sms`.
    pub enabled: bool,
    /// `supabase.secret_file`: the hook secret(s) exactly as given to Supabase Auth
    /// (`v1,whsec_<base64>`; several separated by `|` or new lines, for a rotation).
    pub secret_file: PathBuf,
    /// `supabase.otp_ttl_seconds`: the code's lifetime in Supabase (`GOTRUE_SMS_OTP_EXP`,
    /// default 60), for `{minutes}` in the text and so a code queued past it is never sent.
    pub otp_ttl_seconds: u64,
}

impl Default for RawSupabase {
    fn default() -> Self {
        RawSupabase {
            enabled: false,
            secret_file: PathBuf::new(),
            otp_ttl_seconds: 60,
        }
    }
}

/// `[zitadel]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawZitadel {
    /// `zitadel.enabled`: serve `POST /hooks/zitadel/sms`.
    pub enabled: bool,
    /// `zitadel.signing_key_file`: the `signingKey` Zitadel returned when the HTTP SMS provider
    /// was added.
    pub signing_key_file: PathBuf,
}

/// `[supabase]`, validated; present in [`super::Config`] only when enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupabaseSettings {
    /// Where the secrets are read from.
    pub secret_file: PathBuf,
    /// The code's lifetime in Supabase.
    pub otp_ttl: Duration,
}

/// `[zitadel]`, validated; present in [`super::Config`] only when enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZitadelSettings {
    /// Where the signing key is read from.
    pub signing_key_file: PathBuf,
}

impl RawSupabase {
    /// `(key, reason)` of the first bad value; `Ok(None)` when the table is off.
    pub fn validate(self) -> Result<Option<SupabaseSettings>, (&'static str, String)> {
        if !self.enabled {
            return Ok(None);
        }
        if self.secret_file.as_os_str().is_empty() {
            return Err((
                "supabase.secret_file",
                "supabase is enabled without a secret: set secret_file to a file (mode 0600) \
                 holding the v1,whsec_... secret given to Supabase Auth"
                    .into(),
            ));
        }
        if !(10..=86_400).contains(&self.otp_ttl_seconds) {
            return Err((
                "supabase.otp_ttl_seconds",
                format!(
                    "{} is out of range (10..=86400); use Supabase's GOTRUE_SMS_OTP_EXP",
                    self.otp_ttl_seconds
                ),
            ));
        }
        Ok(Some(SupabaseSettings {
            secret_file: self.secret_file,
            otp_ttl: Duration::from_secs(self.otp_ttl_seconds),
        }))
    }
}

impl RawZitadel {
    /// `(key, reason)` of the first bad value; `Ok(None)` when the table is off.
    pub fn validate(self) -> Result<Option<ZitadelSettings>, (&'static str, String)> {
        if !self.enabled {
            return Ok(None);
        }
        if self.signing_key_file.as_os_str().is_empty() {
            return Err((
                "zitadel.signing_key_file",
                "zitadel is enabled without a key: set signing_key_file to a file (mode 0600) \
                 holding the signingKey Zitadel returned for the HTTP SMS provider"
                    .into(),
            ));
        }
        Ok(Some(ZitadelSettings {
            signing_key_file: self.signing_key_file,
        }))
    }
}

/// Shortest key accepted: a short HMAC key can be guessed offline from one signed request.
pub const MIN_KEY_BYTES: usize = 16;

/// The trimmed contents of a secret file that only its owner may read.
pub(super) fn read_secret(path: &Path) -> Result<String, String> {
    let fail = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut file = File::open(path).map_err(fail)?;
    let mode = file.metadata().map_err(fail)?.permissions().mode();
    // Same rule as pin_file and the Twilio token file: a secret others can read is refused.
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} can be read by group or others, and serve refuses it: make it the service \
             user's alone with sudo chown simgate:simgate {} && sudo chmod 600 {}",
            path.display(),
            path.display(),
            path.display()
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(fail)?;
    Ok(text.trim().to_owned())
}

/// One Supabase hook secret (`v1,whsec_<base64>`, as Supabase Auth's config takes it) as the
/// HMAC key bytes, or why not. The value itself never appears in the reason.
pub fn parse_supabase_secret(s: &str) -> Result<Vec<u8>, String> {
    let b64 = s
        .strip_prefix("v1,whsec_")
        .ok_or("a secret must look like v1,whsec_<base64> (Supabase's symmetric hook secret)")?;
    // Standard Webhooks libraries accept unpadded base64, so padding is optional here too.
    let key = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(b64.trim_end_matches('='))
        .map_err(|_| "the part after whsec_ is not base64")?;
    if key.len() < MIN_KEY_BYTES {
        return Err(format!(
            "the secret decodes to {} bytes; at least {MIN_KEY_BYTES} are needed (Supabase \
             generates 32)",
            key.len()
        ));
    }
    Ok(key)
}

impl SupabaseSettings {
    /// The HMAC keys, in file order (several during a rotation: each is tried).
    pub fn secrets(&self) -> Result<Vec<Vec<u8>>, String> {
        let text = read_secret(&self.secret_file)?;
        let mut keys = Vec::new();
        for (i, s) in text
            .split(['|', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            let key = parse_supabase_secret(s)
                .map_err(|r| format!("secret {} in {}: {r}", i + 1, self.secret_file.display()))?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(format!("{} holds no secret", self.secret_file.display()));
        }
        Ok(keys)
    }
}

impl ZitadelSettings {
    /// The HMAC key: the file's trimmed text, used as bytes exactly as Zitadel uses it.
    pub fn signing_key(&self) -> Result<Vec<u8>, String> {
        let key = read_secret(&self.signing_key_file)?;
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the key in {} has {} bytes; at least {MIN_KEY_BYTES} are needed (Zitadel's \
                 signingKey is longer: was the whole value copied?)",
                self.signing_key_file.display(),
                key.len()
            ));
        }
        Ok(key.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private_file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    #[test]
    fn off_unless_enabled_and_a_file_is_required() {
        assert_eq!(RawSupabase::default().validate(), Ok(None));
        assert_eq!(RawZitadel::default().validate(), Ok(None));
        let s = RawSupabase {
            enabled: true,
            ..RawSupabase::default()
        };
        assert_eq!(s.validate().unwrap_err().0, "supabase.secret_file");
        let z = RawZitadel {
            enabled: true,
            ..RawZitadel::default()
        };
        assert_eq!(z.validate().unwrap_err().0, "zitadel.signing_key_file");
        let s = RawSupabase {
            enabled: true,
            secret_file: "/x".into(),
            otp_ttl_seconds: 5,
        };
        assert_eq!(s.validate().unwrap_err().0, "supabase.otp_ttl_seconds");
    }

    #[test]
    fn supabase_secrets_in_supabases_format() {
        // 32 bytes of 0x01, as base64.
        let b64 = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        assert_eq!(
            parse_supabase_secret(&format!("v1,whsec_{b64}")).unwrap(),
            vec![1u8; 32]
        );
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode([2u8; 20]);
        assert_eq!(
            parse_supabase_secret(&format!("v1,whsec_{unpadded}")).unwrap(),
            vec![2u8; 20]
        );
        for bad in [
            "whsec_AAAA",
            "v1,whsec_!!!!",
            "v1,whsec_AAAA",
            "v1a,whpk_x:whsk_y",
        ] {
            assert!(parse_supabase_secret(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_files_must_be_private_and_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let one = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let two = base64::engine::general_purpose::STANDARD.encode([8u8; 32]);
        let p = private_file(dir.path(), "s", &format!("v1,whsec_{one}|v1,whsec_{two}\n"));
        let s = SupabaseSettings {
            secret_file: p.clone(),
            otp_ttl: Duration::from_secs(60),
        };
        assert_eq!(s.secrets().unwrap(), vec![vec![7u8; 32], vec![8u8; 32]]);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(s.secrets().unwrap_err().contains("chmod 600"));

        let bad = private_file(dir.path(), "bad", "whsec_nope\n");
        let s = SupabaseSettings {
            secret_file: bad,
            otp_ttl: Duration::from_secs(60),
        };
        let e = s.secrets().unwrap_err();
        assert!(e.contains("secret 1") && !e.contains("nope"), "{e}");

        let k = private_file(dir.path(), "k", "  a-zitadel-signing-key-0123456789\n");
        let z = ZitadelSettings {
            signing_key_file: k,
        };
        assert_eq!(
            z.signing_key().unwrap(),
            b"a-zitadel-signing-key-0123456789"
        );
        let short = private_file(dir.path(), "short", "abc");
        let z = ZitadelSettings {
            signing_key_file: short,
        };
        assert!(z.signing_key().unwrap_err().contains("at least"));
        let z = ZitadelSettings {
            signing_key_file: dir.path().join("missing"),
        };
        assert!(z.signing_key().unwrap_err().contains("cannot read"));
    }
}
