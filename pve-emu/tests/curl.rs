//! The emulator checked against real curl: what real Proxmox accepts must work, and the
//! malformed variants must fail the way ref §2.2/§2.3/§11 say.

mod common;
use common::*;
use pve_emu::{Config, Emulator, UPID_REGEX};
use regex::Regex;
use std::time::Duration;

struct Setup {
    emu: Emulator,
    dir: tempfile::TempDir,
    pem: std::path::PathBuf,
}

fn setup(cfg: Config) -> Option<Setup> {
    if !have_curl() {
        return None;
    }
    let emu = start(cfg);
    let dir = tempfile::tempdir().unwrap();
    let pem = write_pem(&emu, dir.path());
    Some(Setup { emu, dir, pem })
}

fn template(s: &Setup, name: &str, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let p = s.dir.path().join(name);
    std::fs::write(&p, &data).unwrap();
    (p, data)
}

fn url(s: &Setup) -> String {
    format!("{}/nodes/pve/storage/local/upload", s.emu.api_url())
}

#[test]
fn curl_upload_like_real_proxmox_accepts_it() {
    let Some(s) = setup(fast()) else { return };
    let (path, data) = template(&s, "debian-12-golden-v1.tar.zst", 200_000);
    let file_arg = format!("filename=@{}", path.display());
    let c = curl(
        &s.emu,
        &s.pem,
        &["-F", "content=vztmpl", "-F", &file_arg],
        &url(&s),
    );
    assert_eq!(c.code, Some(200), "{}{}", c.body, c.stderr);
    assert_eq!(c.header("Connection"), Some("close"));
    assert_eq!(
        c.header("Content-Type"),
        Some("application/json;charset=UTF-8")
    );
    assert_eq!(c.header("Server"), Some("pve-api-daemon/3.0"));
    assert_eq!(c.header("Cache-Control"), Some("max-age=0"));
    assert_eq!(c.header("Pragma"), Some("no-cache"));
    assert_eq!(c.header("Expires"), c.header("Date"));
    let v: serde_json::Value = serde_json::from_str(&c.body).unwrap();
    let upid = v["data"].as_str().unwrap().to_string();
    assert!(Regex::new(UPID_REGEX).unwrap().is_match(&upid), "{upid}");
    assert!(upid.starts_with("UPID:pve:"), "{upid}");
    assert!(upid.ends_with(":imgcopy::automation@pve!ci:"), "{upid}");

    let st = wait_task(&s.emu, "pve", &upid);
    assert_eq!(st["exitstatus"], "OK");
    let log = task_log(&s.emu, "pve", &upid);
    let tmp = log[0]
        .strip_prefix("starting file import from: ")
        .unwrap()
        .to_string();
    assert!(
        Regex::new("^/var/tmp/pveupload-[0-9a-f]{32}$")
            .unwrap()
            .is_match(&tmp),
        "{tmp}"
    );
    assert_eq!(
        log[1..],
        [
            "target node: pve".to_string(),
            "target file: /var/lib/vz/template/cache/debian-12-golden-v1.tar.zst".into(),
            format!("file size is: {}", data.len()),
            format!("command: cp -- {tmp} /var/lib/vz/template/cache/debian-12-golden-v1.tar.zst"),
            "finished file import successfully".into(),
            "TASK OK".into(),
        ]
    );
    let stored = s
        .emu
        .stored_file("pve", "local", "debian-12-golden-v1.tar.zst")
        .unwrap();
    assert_eq!(std::fs::read(stored).unwrap(), data);
    assert!(s.emu.temp_files().is_empty(), "{:?}", s.emu.temp_files());
    let req = s
        .emu
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(req.part_names, ["content", "filename"]);
    assert_eq!(req.status, Some(200));
    assert_eq!(
        req.header("Authorization"),
        Some("PVEAPIToken=automation@pve!ci=<redacted>")
    );
    assert!(!format!("{:?}", s.emu.requests()).contains(SECRET));
}

#[test]
fn curl_upload_with_checksum_in_the_right_order() {
    let Some(s) = setup(fast()) else { return };
    let (path, data) = template(&s, "x.tar.gz", 50_000);
    let file_arg = format!("filename=@{}", path.display());
    // Upper case: the comparison ignores case (ref §2.7).
    let sum = format!("checksum={}", sha256_hex(&data).to_uppercase());
    let c = curl(
        &s.emu,
        &s.pem,
        &[
            "-F",
            "content=vztmpl",
            "-F",
            "checksum-algorithm=sha256",
            "-F",
            &sum,
            "-F",
            &file_arg,
        ],
        &url(&s),
    );
    assert_eq!(c.code, Some(200), "{}{}", c.body, c.stderr);
    let upid = serde_json::from_str::<serde_json::Value>(&c.body).unwrap()["data"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(wait_task(&s.emu, "pve", &upid)["exitstatus"], "OK");
    let log = task_log(&s.emu, "pve", &upid);
    assert_eq!(log[1], "calculating checksum...OK, checksum verified");
    assert_eq!(
        std::fs::read(s.emu.stored_file("pve", "local", "x.tar.gz").unwrap()).unwrap(),
        data
    );
}

#[test]
fn curl_checksum_mismatch_is_a_task_error_not_an_http_error() {
    let Some(s) = setup(fast()) else { return };
    let (path, _) = template(&s, "x.tar.gz", 5000);
    let file_arg = format!("filename=@{}", path.display());
    let c = curl(
        &s.emu,
        &s.pem,
        &[
            "-F",
            "content=vztmpl",
            "-F",
            "checksum-algorithm=md5",
            "-F",
            "checksum=abc",
            "-F",
            &file_arg,
        ],
        &url(&s),
    );
    assert_eq!(c.code, Some(200));
    let upid = serde_json::from_str::<serde_json::Value>(&c.body).unwrap()["data"]
        .as_str()
        .unwrap()
        .to_string();
    let st = wait_task(&s.emu, "pve", &upid);
    let ex = st["exitstatus"].as_str().unwrap();
    assert!(
        Regex::new("^checksum mismatch: got '[0-9a-f]{32}' != expect 'abc'$")
            .unwrap()
            .is_match(ex),
        "{ex}"
    );
    let log = task_log(&s.emu, "pve", &upid);
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[1], "calculating checksum...");
    assert_eq!(log[2], format!("TASK ERROR: {ex}"));
    assert!(s.emu.stored_file("pve", "local", "x.tar.gz").is_none());
    assert!(s.emu.temp_files().is_empty());
}

#[test]
fn curl_wrong_field_orders_fail_like_proxmox() {
    let Some(s) = setup(fast()) else { return };
    let (path, _) = template(&s, "x.tar.gz", 3000);
    let file_arg = format!("filename=@{}", path.display());
    // checksum before checksum-algorithm, all in one read: the regex reaches across the
    // parts and the error message has a CR in its first line → bare 400 (ref §11).
    let c = curl(
        &s.emu,
        &s.pem,
        &[
            "-F",
            "content=vztmpl",
            "-F",
            "checksum=abc",
            "-F",
            "checksum-algorithm=sha256",
            "-F",
            &file_arg,
        ],
        &url(&s),
    );
    assert_eq!(
        (c.code, c.reason.as_str()),
        (Some(400), "Bad Request"),
        "{}",
        c.stderr
    );
    assert_eq!(c.body, "");
    // content after checksum fields: same.
    let c = curl(
        &s.emu,
        &s.pem,
        &[
            "-F",
            "checksum-algorithm=sha256",
            "-F",
            "checksum=abc",
            "-F",
            "content=vztmpl",
            "-F",
            &file_arg,
        ],
        &url(&s),
    );
    assert_eq!(c.code, Some(400));
    assert_eq!(c.body, "");
    // An extra text field before the file part is swallowed into the file regex's name.
    let c = curl(
        &s.emu,
        &s.pem,
        &["-F", "content=vztmpl", "-F", "node=pve", "-F", &file_arg],
        &url(&s),
    );
    assert_eq!((c.code, c.body.as_str()), (Some(400), ""));
    // The file part named `file`: 500 with Perl's "at … line N." (ref §2.3, §11).
    let file_arg2 = format!("file=@{}", path.display());
    let c = curl(
        &s.emu,
        &s.pem,
        &["-F", "content=vztmpl", "-F", &file_arg2],
        &url(&s),
    );
    let msg = "wrong field name 'file' for file upload, expected 'filename' at /usr/share/perl5/PVE/APIServer/AnyEvent.pm line 1325.";
    assert_eq!(c.code, Some(500));
    assert_eq!(c.reason, msg);
    assert_eq!(c.body, format!("{msg}\n"));
    assert_eq!(c.header("Content-Type"), None);
    assert!(s.emu.tasks().is_empty());
}

#[test]
fn curl_part_after_the_file_becomes_file_data() {
    let Some(s) = setup(fast()) else { return };
    // Large enough that the file part is parsed before the trailing part arrives.
    let (path, data) = template(&s, "x.tar.gz", 1 << 20);
    let file_arg = format!("filename=@{}", path.display());
    let c = curl(
        &s.emu,
        &s.pem,
        &["-F", &file_arg, "-F", "content=vztmpl"],
        &url(&s),
    );
    assert_eq!(c.code, Some(400), "{}", c.stderr);
    let v: serde_json::Value = serde_json::from_str(&c.body).unwrap();
    assert_eq!(
        v["errors"]["content"],
        "property is missing and it is not optional"
    );
    assert_eq!(v["message"], "Parameter verification failed.\n");
    assert_eq!(v["data"], serde_json::Value::Null);
    // A handler error leaves the temp file behind (ref §2.12), holding the file plus the part.
    let tmp = s.emu.temp_files();
    assert_eq!(tmp.len(), 1);
    let got = std::fs::read(&tmp[0]).unwrap();
    assert_eq!(&got[..data.len()], &data[..]);
    let tail = String::from_utf8_lossy(&got[data.len()..]).into_owned();
    assert!(tail.starts_with("\r\n--"), "{tail:?}");
    assert!(
        tail.ends_with("Content-Disposition: form-data; name=\"content\"\r\n\r\nvztmpl"),
        "{tail:?}"
    );
}

#[test]
fn curl_chunked_is_refused_with_501() {
    let Some(s) = setup(fast()) else { return };
    let (path, _) = template(&s, "x.tar.gz", 3000);
    let file_arg = format!("filename=@{}", path.display());
    let c = curl(
        &s.emu,
        &s.pem,
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "-F",
            "content=vztmpl",
            "-F",
            &file_arg,
        ],
        &url(&s),
    );
    assert_eq!(c.code, Some(501), "{}", c.stderr);
    assert_eq!(c.reason, "chunked transfer encoding not supported");
    assert_eq!(c.body, "chunked transfer encoding not supported");
    assert!(s.emu.temp_files().is_empty());
    assert!(s.emu.tasks().is_empty());
}

#[test]
fn curl_quoted_boundary_never_matches() {
    let Some(s) = setup(fast()) else { return };
    let b = "XyZ123";
    let body = multipart(
        b,
        &[
            text("content", "vztmpl"),
            file("filename", "x.tar.gz", b"data"),
        ],
    );
    let bp = s.dir.path().join("body");
    std::fs::write(&bp, &body).unwrap();
    let data_arg = format!("@{}", bp.display());
    let ct = format!("Content-Type: multipart/form-data; boundary=\"{b}\"");
    let c = curl(
        &s.emu,
        &s.pem,
        &["-H", &ct, "--data-binary", &data_arg],
        &url(&s),
    );
    // The boundary keeps its quotes: nothing matches; all bytes in → "upload failed".
    let msg = "upload failed at /usr/share/perl5/PVE/APIServer/AnyEvent.pm line 1370.";
    assert_eq!(
        (c.code, c.reason.as_str()),
        (Some(500), msg),
        "{}",
        c.stderr
    );
    assert_eq!(c.body, format!("{msg}\n"));
    // The same body with the boundary unquoted is fine.
    let ct = format!("Content-Type: multipart/form-data; boundary={b}");
    let c = curl(
        &s.emu,
        &s.pem,
        &["-H", &ct, "--data-binary", &data_arg],
        &url(&s),
    );
    assert_eq!(c.code, Some(200), "{}", c.body);
}

#[test]
fn curl_non_multipart_upload_and_tmpfilename_get_no_answer() {
    let cfg = Config {
        client_timeout: Duration::from_millis(700),
        ..fast()
    };
    let Some(s) = setup(cfg) else { return };
    let (path, _) = template(&s, "x.tar.gz", 3000);
    let data_arg = format!("@{}", path.display());
    let c = curl(
        &s.emu,
        &s.pem,
        &[
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &data_arg,
        ],
        &url(&s),
    );
    assert_eq!(c.code, None);
    assert_eq!(c.exit, 52, "curl: empty reply expected: {}", c.stderr);
    let file_arg = format!("filename=@{}", path.display());
    let u = format!("{}?tmpfilename=/var/tmp/pveupload-00", url(&s));
    let c = curl(
        &s.emu,
        &s.pem,
        &["-F", "content=vztmpl", "-F", &file_arg],
        &u,
    );
    assert_eq!((c.code, c.exit), (None, 52), "{}", c.stderr);
    // The refused tmpfilename upload had created its temp file already (ref §2.2).
    assert_eq!(s.emu.temp_files().len(), 1);
    let reqs = s.emu.requests();
    assert!(reqs.iter().all(|r| r.status.is_none()), "{reqs:?}");
}

#[test]
fn curl_post_without_body_reaches_the_handler() {
    let Some(s) = setup(fast()) else { return };
    let c = curl(&s.emu, &s.pem, &["-X", "POST"], &url(&s));
    assert_eq!(c.code, Some(400), "{}", c.stderr);
    let v: serde_json::Value = serde_json::from_str(&c.body).unwrap();
    assert_eq!(
        v["errors"]["content"],
        "property is missing and it is not optional"
    );
    assert_eq!(
        v["errors"]["filename"],
        "property is missing and it is not optional"
    );
    let u = format!("{}?content=vztmpl&filename=x.tar.gz", url(&s));
    let c = curl(&s.emu, &s.pem, &["-X", "POST"], &u);
    assert_eq!(
        (c.code, c.reason.as_str()),
        (Some(500), "missing temporary file name")
    );
}

/// Peak RSS of a process in KiB.
fn vm_hwm(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn binary_streams_a_300_mib_curl_upload_with_flat_memory() {
    if !have_curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pve-emu"))
        .args(["--data-dir"])
        .arg(&data_dir)
        .args(["--token", "bench@pve!up=s3cret", "--auth-delay-ms", "100"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let info: serde_json::Value = serde_json::from_str(&line).unwrap();
    let pid = info["pid"].as_u64().unwrap() as u32;
    assert_eq!(pid, child.id());
    let pem = info["cert_pem_file"].as_str().unwrap().to_string();
    assert!(info["fingerprint"].as_str().unwrap().len() == 95);
    // A 300 MiB file, written in pieces.
    let file = dir.path().join("big.tar.zst");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        for _ in 0..300 {
            std::io::Write::write_all(&mut f, &chunk).unwrap();
        }
    }
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            &pem,
            "-H",
            "Authorization: PVEAPIToken=bench@pve!up=s3cret",
        ])
        .args(["-F", "content=vztmpl", "-F"])
        .arg(format!("filename=@{}", file.display()))
        .arg(format!(
            "{}/nodes/pve/storage/local/upload",
            info["api_url"].as_str().unwrap()
        ))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        body.contains("UPID:pve:"),
        "{body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = data_dir.join("nodes/pve/storage/local/template/cache/big.tar.zst");
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&stored).map_or(0, |m| m.len()) != 300 << 20 {
        assert!(
            std::time::Instant::now() < end,
            "stored file never complete"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let hwm = vm_hwm(pid);
    unsafe_kill(pid);
    let _ = child.wait();
    assert!(
        hwm < 64 * 1024,
        "emulator peak RSS {hwm} KiB for a 300 MiB upload"
    );
}

fn unsafe_kill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status();
}
