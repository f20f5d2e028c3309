//! API token authentication (ref §1).

use crate::config::TokenConfig;
use regex::Regex;
use std::sync::LazyLock;

/// `extract_auth_value` (pve-http-server Formatter.pm, ref §1.1): `(?:^|\s)KEY(?:=| )([^;]*)`,
/// then URI-unescaped. An empty value counts as absent (Perl `if $value`).
pub fn extract_auth_value(header: Option<&str>, key: &str) -> Option<String> {
    let header = header?;
    let re = Regex::new(&format!(r"(?:^|\s){}(?:=| )([^;]*)", regex::escape(key))).unwrap();
    let v = re.captures(header)?.get(1)?.as_str().to_string();
    if v.is_empty() {
        return None;
    }
    let v = String::from_utf8_lossy(&crate::multipart::percent_decode(v.as_bytes(), false))
        .into_owned();
    // Perl's `if $value`: "0" is false too.
    (v != "0" && !v.is_empty()).then_some(v)
}

/// `$token_full_regex` (ref §1.1): `((USER)@(REALM))!(TOKENSUBID)`.
static TOKEN_ID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(([^\s:/]+)@([A-Za-z][A-Za-z0-9\.\-_]+))!([A-Za-z][A-Za-z0-9\.\-_]+)$").unwrap()
});

/// Splits `user@realm!token` into (`user@realm`, `token`).
pub fn split_tokenid(id: &str) -> Option<(String, String)> {
    let c = TOKEN_ID.captures(id)?;
    Some((c[1].to_string(), c[4].to_string()))
}

/// `verify_token` (pve-access-control AccessControl.pm): the token on success, else the
/// detailed error message (the first line becomes the old-style reason phrase).
pub fn verify_token<'a>(
    tokens: &'a [TokenConfig],
    api_token: &str,
) -> Result<&'a TokenConfig, String> {
    // /^(.*)=(.*)$/ — greedy, so the split is on the last '='; '.' does not match "\n".
    let line = api_token;
    let Some(eq) = line.rfind('=') else {
        return Err("no tokenid specified".into());
    };
    let (tokenid, value) = (&line[..eq], &line[eq + 1..]);
    if tokenid.contains('\n') || value.contains('\n') {
        return Err("no tokenid specified".into());
    }
    let Some((user, token)) = split_tokenid(tokenid) else {
        return Err(format!(
            "'{tokenid}' is not a valid token ID - not able to split into user and token parts"
        ));
    };
    if !tokens.iter().any(|t| t.user == user) {
        return Err(format!("no such user ('{user}')"));
    }
    let Some(t) = tokens.iter().find(|t| t.user == user && t.token == token) else {
        return Err(format!("no such token '{token}' for user '{user}'"));
    };
    if t.secret != value {
        return Err("invalid token value!".into());
    }
    Ok(t)
}

/// The `Authorization` value as recorded: the secret is never kept.
pub fn redact(value: &str) -> String {
    if let Some(v) = extract_auth_value(Some(value), "PVEAPIToken") {
        if let Some(eq) = v.rfind('=') {
            return format!("PVEAPIToken={}=<redacted>", &v[..eq]);
        }
        return "PVEAPIToken=<redacted>".into();
    }
    "<redacted>".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks() -> Vec<TokenConfig> {
        vec![TokenConfig::full("automation@pve", "ci", "s3cret=x")]
    }

    #[test]
    fn header_forms() {
        let h = "PVEAPIToken=automation@pve!ci=abc";
        assert_eq!(
            extract_auth_value(Some(h), "PVEAPIToken").unwrap(),
            "automation@pve!ci=abc"
        );
        let h = "PVEAPIToken automation@pve!ci=abc";
        assert_eq!(
            extract_auth_value(Some(h), "PVEAPIToken").unwrap(),
            "automation@pve!ci=abc"
        );
        let h = "pveapitoken=automation@pve!ci=abc";
        assert!(extract_auth_value(Some(h), "PVEAPIToken").is_none());
        let h = "PVEAPIToken=a%40pve!ci=x;rest";
        assert_eq!(
            extract_auth_value(Some(h), "PVEAPIToken").unwrap(),
            "a@pve!ci=x"
        );
    }

    #[test]
    fn verify_messages() {
        let t = toks();
        // Split on the last '=': a secret containing '=' cannot be used.
        assert_eq!(
            verify_token(&t, "automation@pve!ci=s3cret=x").unwrap_err(),
            "'automation@pve!ci=s3cret' is not a valid token ID - not able to split into user and token parts"
        );
        let t = vec![TokenConfig::full("automation@pve", "ci", "abc")];
        assert!(verify_token(&t, "automation@pve!ci=abc").is_ok());
        assert_eq!(
            verify_token(&t, "automation@pve!ci=abd").unwrap_err(),
            "invalid token value!"
        );
        assert_eq!(
            verify_token(&t, "automation@pve!cd=abc").unwrap_err(),
            "no such token 'cd' for user 'automation@pve'"
        );
        assert_eq!(
            verify_token(&t, "dev@pve!ci=abc").unwrap_err(),
            "no such user ('dev@pve')"
        );
        assert_eq!(
            verify_token(&t, "automation@pve!ci").unwrap_err(),
            "no tokenid specified"
        );
        assert!(
            verify_token(&t, "automation@pve!a!b=abc")
                .unwrap_err()
                .contains("not a valid token ID")
        );
        assert!(
            verify_token(&t, "automation@pve!c=abc")
                .unwrap_err()
                .contains("not a valid token ID")
        );
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact("PVEAPIToken=automation@pve!ci=abc"),
            "PVEAPIToken=automation@pve!ci=<redacted>"
        );
        assert_eq!(redact("Basic Zm9v"), "<redacted>");
    }
}
