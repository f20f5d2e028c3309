//! UPIDs (ref §3).

use regex::Regex;
use std::sync::LazyLock;

/// The decode regex of pve-common `PVE/UPID.pm` (ref §3).
pub const UPID_REGEX: &str = r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$";

static RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(UPID_REGEX).unwrap());

/// A decoded UPID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: u64,
    pub kind: String,
    pub id: String,
    pub user: String,
}

impl Upid {
    /// `UPID:%s:%08X:%08X:%08X:%s:%s:%s:` (upper-case hex, trailing colon).
    pub fn encode(&self) -> String {
        format!(
            "UPID:{}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
            self.node, self.pid, self.pstart, self.starttime, self.kind, self.id, self.user
        )
    }

    pub fn decode(s: &str) -> Option<Upid> {
        let c = RE.captures(s)?;
        Some(Upid {
            node: c[1].to_string(),
            pid: u32::from_str_radix(&c[3], 16).ok()?,
            pstart: u64::from_str_radix(&c[4], 16).ok()?,
            starttime: u64::from_str_radix(&c[5], 16).ok()?,
            kind: c[6].to_string(),
            id: c[7].to_string(),
            user: c[8].to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_real_examples() {
        let real = "UPID:proxmoxa:001A8239:0E46EB64:691B7346:imgcopy::ansible@EXAMPLE.COM!ansible:";
        let u = Upid::decode(real).unwrap();
        assert_eq!(u.node, "proxmoxa");
        assert_eq!(u.pid, 0x001A8239);
        assert_eq!(u.kind, "imgcopy");
        assert_eq!(u.id, "");
        assert_eq!(u.user, "ansible@EXAMPLE.COM!ansible");
        assert_eq!(u.encode(), real);
        assert_eq!(real.split(':').count(), 9);
        assert!(Upid::decode("UPID:pve:1:2:3:imgcopy::u@pve:").is_none());
        assert!(Upid::decode(&real[..real.len() - 1]).is_none());
    }
}
