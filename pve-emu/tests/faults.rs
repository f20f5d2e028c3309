//! Fault injection, connection drops, temp-file bookkeeping, stray bytes (ref §2.11, §2.12, §11).

mod common;
use common::*;
use pve_emu::{Config, Fault};
use serde_json::json;
use std::time::{Duration, Instant};

fn body_for(name: &str, data: &[u8], checksum: Option<&str>) -> Vec<u8> {
    let mut parts = vec![text("content", "vztmpl")];
    if let Some(c) = checksum {
        parts.push(text("checksum-algorithm", "sha256"));
        parts.push(text("checksum", c));
    }
    parts.push(file("filename", name, data));
    multipart(BOUNDARY, &parts)
}

fn upload(emu: &pve_emu::Emulator, name: &str, data: &[u8], checksum: Option<&str>) -> Raw {
    exchange(
        emu,
        &upload_request(UPLOAD, &body_for(name, data, checksum)),
    )
}

fn upid_of(r: &Raw) -> String {
    r.json()["data"]
        .as_str()
        .unwrap_or_else(|| panic!("{r:?}"))
        .to_string()
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 253) as u8).collect()
}

#[test]
fn drop_connection_after_body_bytes() {
    let emu = start(fast());
    emu.inject(Fault::DropConnectionAfterBodyBytes(100_000));
    let d = data(400_000);
    let req = upload_request(UPLOAD, &body_for("x.tar.gz", &d, None));
    let chunks: Vec<Vec<u8>> = req.chunks(16 * 1024).map(<[u8]>::to_vec).collect();
    let r = exchange_chunks(&emu, &chunks, Duration::from_millis(1));
    assert_eq!(r.status, None, "{r:?}");
    let rec = emu.requests().pop().unwrap();
    assert_eq!(rec.status, None);
    assert!(
        rec.body_len >= 100_000 && rec.body_len < 400_000,
        "{}",
        rec.body_len
    );
    // The disconnect unlinks the temp file; nothing stored, no task.
    assert!(emu.temp_files().is_empty());
    assert!(emu.tasks().is_empty());
    // One-shot: the next upload works.
    let r = upload(&emu, "x.tar.gz", &d, None);
    assert_eq!(r.status, Some(200));
}

#[test]
fn a_fault_waits_for_an_upload_that_reaches_it() {
    let emu = start(fast());
    emu.inject(Fault::DropConnectionAfterBodyBytes(1 << 20));
    assert_eq!(upload(&emu, "small.tar.gz", b"abc", None).status, Some(200));
    let r = upload(&emu, "big.tar.gz", &data(2 << 20), None);
    assert_eq!(r.status, None);
    emu.inject(Fault::DropConnectionAfterBodyBytes(10));
    emu.clear_faults();
    assert_eq!(upload(&emu, "again.tar.gz", b"abc", None).status, Some(200));
}

#[test]
fn upload_status_500() {
    let emu = start(fast());
    emu.inject(Fault::UploadStatus500("pvedaemon is busy".into()));
    let r = upload(&emu, "x.tar.gz", b"abc", None);
    assert_eq!(
        (r.status, r.reason.as_str()),
        (Some(500), "pvedaemon is busy")
    );
    assert_eq!(
        r.json(),
        json!({"data": null, "message": "pvedaemon is busy\n"})
    );
    assert!(emu.tasks().is_empty());
    assert!(emu.stored_file("pve", "local", "x.tar.gz").is_none());
    assert_eq!(upload(&emu, "x.tar.gz", b"abc", None).status, Some(200));
}

#[test]
fn task_fails() {
    let emu = start(fast());
    emu.inject(Fault::TaskFails("import failed: cp: write error".into()));
    let r = upload(&emu, "x.tar.gz", b"abc", None);
    let upid = upid_of(&r);
    let st = wait_task(&emu, "pve", &upid);
    assert_eq!(st["exitstatus"], "import failed: cp: write error");
    let log = task_log(&emu, "pve", &upid);
    assert_eq!(
        log.last().unwrap(),
        "TASK ERROR: import failed: cp: write error"
    );
    assert!(emu.stored_file("pve", "local", "x.tar.gz").is_none());
    assert!(emu.temp_files().is_empty());
}

#[test]
fn corrupt_upload_with_and_without_checksum() {
    let emu = start(fast());
    let d = data(10_000);
    emu.inject(Fault::CorruptUpload);
    let r = upload(&emu, "x.tar.gz", &d, Some(&sha256_hex(&d)));
    let st = wait_task(&emu, "pve", &upid_of(&r));
    assert!(
        st["exitstatus"]
            .as_str()
            .unwrap()
            .starts_with("checksum mismatch: got '"),
        "{st}"
    );
    assert!(emu.stored_file("pve", "local", "x.tar.gz").is_none());
    emu.inject(Fault::CorruptUpload);
    let r = upload(&emu, "y.tar.gz", &d, None);
    assert_eq!(wait_task(&emu, "pve", &upid_of(&r))["exitstatus"], "OK");
    let stored = std::fs::read(emu.stored_file("pve", "local", "y.tar.gz").unwrap()).unwrap();
    assert_eq!(stored.len(), d.len());
    assert_ne!(stored, d);
}

#[test]
fn slow_task_and_no_such_task() {
    let emu = start(fast());
    emu.inject(Fault::SlowTask(Duration::from_millis(900)));
    emu.inject(Fault::NoSuchTaskFor(2));
    let t0 = Instant::now();
    let upid = upid_of(&upload(&emu, "x.tar.gz", b"abc", None));
    let status =
        |emu: &pve_emu::Emulator| get(emu, &format!("/nodes/pve/tasks/{}/status", urlenc(&upid)));
    for _ in 0..2 {
        let r = status(&emu);
        assert_eq!(r.status, Some(400));
        assert_eq!(r.json()["errors"], json!({"upid": "no such task"}));
    }
    let r = status(&emu);
    assert_eq!(r.status, Some(200));
    assert_eq!(r.json()["data"]["status"], "running");
    let st = wait_task(&emu, "pve", &upid);
    assert_eq!(st["exitstatus"], "OK");
    assert!(t0.elapsed() >= Duration::from_millis(900));
    // Consumed: the next task is normal.
    let upid = upid_of(&upload(&emu, "y.tar.gz", b"abc", None));
    assert_eq!(status_of(&emu, &upid), Some(200));
}

fn status_of(emu: &pve_emu::Emulator, upid: &str) -> Option<u16> {
    get(emu, &format!("/nodes/pve/tasks/{}/status", urlenc(upid))).status
}

#[test]
fn disk_full() {
    let emu = start(fast());
    emu.inject(Fault::DiskFull);
    let r = upload(&emu, "x.tar.gz", &data(1000), None);
    let msg = "write to temporary file failed - No space left on device";
    assert_eq!((r.status, r.reason.as_str()), (Some(500), msg));
    assert_eq!(r.text(), format!("{msg}\n"));
    assert_eq!(r.header("Content-Type"), None);
    assert!(emu.tasks().is_empty());
    // The storage itself full: the copy inside the task fails.
    let small = start(Config {
        storages: vec![pve_emu::StorageConfig {
            total: 5000,
            ..pve_emu::StorageConfig::dir("local", &["vztmpl"])
        }],
        ..fast()
    });
    let r = upload(&small, "x.tar.gz", &data(6000), None);
    let st = wait_task(&small, "pve", &upid_of(&r));
    assert_eq!(
        st["exitstatus"],
        "import failed: cp: error writing '/var/lib/vz/template/cache/x.tar.gz': No space left on device"
    );
    assert!(small.stored_file("pve", "local", "x.tar.gz").is_none());
    assert!(small.temp_files().is_empty());
}

#[test]
fn status_500_on_a_path() {
    let emu = start(fast());
    emu.inject(Fault::Status500On("/tasks/".into()));
    assert_eq!(get(&emu, "/version").status, Some(200));
    let upid = upid_of(&upload(&emu, "x.tar.gz", b"abc", None));
    assert_eq!(status_of(&emu, &upid), Some(500));
    assert_eq!(status_of(&emu, &upid), Some(200));
}

#[test]
fn client_disconnect_mid_upload_unlinks_the_temp_file() {
    let emu = start(fast());
    let req = upload_request(UPLOAD, &body_for("x.tar.gz", &data(300_000), None));
    {
        let half = req[..150_000].to_vec();
        // Send half, then drop the connection.
        let tcp = std::net::TcpStream::connect(emu.addr()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(emu.cert_der()))
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let conn = rustls::ClientConnection::new(
            std::sync::Arc::new(cfg),
            "127.0.0.1".try_into().unwrap(),
        )
        .unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        use std::io::Write;
        s.write_all(&half).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            emu.temp_files().len(),
            1,
            "upload in progress has a temp file"
        );
    }
    let end = Instant::now() + Duration::from_secs(5);
    while !emu.temp_files().is_empty() {
        assert!(Instant::now() < end, "temp file not removed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(emu.tasks().is_empty());
}

#[test]
fn unparseable_big_body_is_dropped_at_rbuf_max() {
    let emu = start(Config {
        client_timeout: Duration::from_secs(10),
        ..fast()
    });
    // Unquoted name= never matches: the buffer fills up; ENOSPC drops the client (ref §2.3 item 6).
    let mut body =
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=content\r\n\r\nvztmpl\r\n")
            .into_bytes();
    body.extend(vec![b'x'; 800 * 1024]);
    let req = upload_request(UPLOAD, &body);
    let chunks: Vec<Vec<u8>> = req.chunks(32 * 1024).map(<[u8]>::to_vec).collect();
    let r = exchange_chunks(&emu, &chunks, Duration::ZERO);
    assert_eq!(r.status, None);
    assert!(r.elapsed < Duration::from_secs(5), "{:?}", r.elapsed);
    assert!(emu.temp_files().is_empty());
}

#[test]
fn stray_bytes_after_the_closing_boundary_run_the_handler_again() {
    let emu = start(Config {
        proxy_latency: Duration::from_millis(300),
        ..fast()
    });
    let req = upload_request(UPLOAD, &body_for("x.tar.gz", &data(5000), None));
    let (a, b) = req.split_at(req.len() - 2); // "--B--" | "\r\n"
    let r = exchange_chunks(&emu, &[a.to_vec(), b.to_vec()], Duration::from_millis(50));
    assert_eq!(r.status, Some(200));
    let rec = emu.requests().pop().unwrap();
    assert_eq!(rec.handler_runs, 2);
    // In one piece: once.
    let r = exchange(&emu, &req);
    assert_eq!(r.status, Some(200));
    assert_eq!(emu.requests().pop().unwrap().handler_runs, 1);
}

#[test]
fn several_faults_queue_in_order() {
    let emu = start(fast());
    emu.inject(Fault::TaskFails("first".into()));
    emu.inject(Fault::TaskFails("second".into()));
    let a = upid_of(&upload(&emu, "a.tar.gz", b"a", None));
    let b = upid_of(&upload(&emu, "b.tar.gz", b"b", None));
    let c = upid_of(&upload(&emu, "c.tar.gz", b"c", None));
    assert_eq!(wait_task(&emu, "pve", &a)["exitstatus"], "first");
    assert_eq!(wait_task(&emu, "pve", &b)["exitstatus"], "second");
    assert_eq!(wait_task(&emu, "pve", &c)["exitstatus"], "OK");
    let tasks = emu.tasks();
    assert_eq!(tasks.len(), 3);
    assert!(
        tasks
            .iter()
            .all(|t| t.kind == "imgcopy" && t.node == "pve" && t.status == "stopped")
    );
    assert_eq!(tasks[2].exitstatus.as_deref(), Some("OK"));
    assert_eq!(tasks[2].log.last().unwrap(), "TASK OK");
}

#[test]
fn emulator_is_send_and_sync_and_usable_from_async_code() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<pve_emu::Emulator>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let emu = pve_emu::Emulator::start(fast()).await.unwrap();
        // A blocking client on the test's own (single) thread: the emulator has its own runtime.
        let r = upload(&emu, "x.tar.gz", b"abc", None);
        assert_eq!(r.status, Some(200));
        assert!(emu.wait_tasks_idle(Duration::from_secs(5)).await);
        assert_eq!(emu.tasks()[0].exitstatus.as_deref(), Some("OK"));
        emu.shutdown().await;
    });
}
