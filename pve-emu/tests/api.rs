//! Authentication, listings, tasks, delete, error shapes (ref §1, §3–§7, §10).

mod common;
use common::*;
use pve_emu::{AuthReason, Config, StorageConfig, TokenConfig, UPID_REGEX};
use regex::Regex;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

fn req_with_auth(path: &str, auth: Option<&str>) -> Vec<u8> {
    let mut r = format!("GET /api2/json{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if let Some(a) = auth {
        r.push_str(&format!("Authorization: {a}\r\n"));
    }
    r.push_str("Connection: close\r\n\r\n");
    r.into_bytes()
}

fn assert_bodyless(r: &Raw) {
    assert!(r.body.is_empty(), "{:?}", r.text());
    assert_eq!(r.header("Content-Length"), None);
    assert_eq!(r.header("Content-Type"), None);
    assert_eq!(r.header("Connection"), Some("close"));
}

#[test]
fn version_shape() {
    let emu = start(fast());
    let r = get(&emu, "/version");
    assert_eq!(r.status, Some(200));
    assert_eq!(
        r.header("Content-Type"),
        Some("application/json;charset=UTF-8")
    );
    assert_eq!(
        r.json(),
        json!({"data": {"version": "8.2.4", "release": "8.2", "repoid": "faa83925c9641325"}})
    );
    let r = get(&emu, "/version?foo=1");
    assert_eq!(r.status, Some(400));
    assert_eq!(
        r.json()["errors"]["foo"],
        "property is not defined in schema and the schema does not allow additional properties"
    );
    let emu9 = start(Config {
        pve_version: "9.1.2".into(),
        ..fast()
    });
    let v = get(&emu9, "/version").json();
    assert_eq!(v["data"]["release"], "9.1");
    assert!(
        Regex::new("^[0-9a-f]{16}$")
            .unwrap()
            .is_match(v["data"]["repoid"].as_str().unwrap())
    );
}

#[test]
fn auth_failures_are_bodyless_delayed_401s() {
    let emu = start(Config {
        auth_failure_delay: Duration::from_millis(400),
        ..fast()
    });
    let r = exchange(&emu, &req_with_auth("/version", None));
    assert_eq!((r.status, r.reason.as_str()), (Some(401), "No ticket"));
    assert_bodyless(&r);
    assert!(r.elapsed >= Duration::from_millis(400), "{:?}", r.elapsed);
    for bad in [
        "PVEAPIToken=automation@pve!ci=wrong",
        "PVEAPIToken=automation@pve!other=00000000-0000-4000-8000-000000000001",
        "PVEAPIToken=automation@pve!ci",
        "PVEAPIToken=automation@pve!a!b=x",
    ] {
        let r = exchange(&emu, &req_with_auth("/version", Some(bad)));
        assert_eq!(
            (r.status, r.reason.as_str()),
            (Some(401), "Authentication failed!"),
            "{bad}"
        );
        assert_bodyless(&r);
    }
    // The space separator works, the key is case-sensitive.
    let ok = format!("PVEAPIToken automation@pve!ci={SECRET}");
    assert_eq!(
        exchange(&emu, &req_with_auth("/version", Some(&ok))).status,
        Some(200)
    );
    let lc = format!("pveapitoken=automation@pve!ci={SECRET}");
    let r = exchange(&emu, &req_with_auth("/version", Some(&lc)));
    assert_eq!((r.status, r.reason.as_str()), (Some(401), "No ticket"));
}

#[test]
fn detailed_reasons_of_older_releases() {
    let emu = start(Config {
        auth_reason: AuthReason::Detailed,
        ..fast()
    });
    let cases = [
        (
            "PVEAPIToken=automation@pve!ci=wrong",
            "invalid token value!",
        ),
        (
            "PVEAPIToken=automation@pve!tok=x",
            "no such token 'tok' for user 'automation@pve'",
        ),
        ("PVEAPIToken=dev@pve!ci=x", "no such user ('dev@pve')"),
        ("PVEAPIToken=automation@pve!ci", "no tokenid specified"),
    ];
    for (h, reason) in cases {
        let r = exchange(&emu, &req_with_auth("/version", Some(h)));
        assert_eq!((r.status, r.reason.as_str()), (Some(401), reason));
        assert_bodyless(&r);
    }
    let by_version = start(Config {
        auth_reason: AuthReason::ByVersion,
        pve_version: "9.1.5".into(),
        ..fast()
    });
    let r = exchange(
        &by_version,
        &req_with_auth("/version", Some("PVEAPIToken=automation@pve!ci=wrong")),
    );
    assert_eq!(r.reason, "Authentication failed!");
}

#[test]
fn faithful_default_delay_is_three_seconds() {
    let emu = start(Config::default());
    let r = exchange(
        &emu,
        &req_with_auth("/version", Some("PVEAPIToken=automation@pve!ci=wrong")),
    );
    assert_eq!(r.status, Some(401));
    assert!(r.elapsed >= Duration::from_secs(3), "{:?}", r.elapsed);
    assert!(r.elapsed < Duration::from_millis(4500), "{:?}", r.elapsed);
}

fn limited_token() -> TokenConfig {
    TokenConfig::with_privs(
        "limited@pve",
        "up",
        "sec",
        "local",
        &["Datastore.AllocateTemplate"],
    )
}

#[test]
fn upload_without_allocate_template_is_an_early_bodyless_403() {
    let mut cfg = fast();
    cfg.tokens.push(TokenConfig::with_privs(
        "audit@pve",
        "ro",
        "sec",
        "*",
        &["Datastore.Audit"],
    ));
    let emu = start(cfg);
    let body = multipart(
        BOUNDARY,
        &[
            text("content", "vztmpl"),
            file("filename", "x.tar.gz", b"data"),
        ],
    );
    let mut req = String::from_utf8(upload_request(UPLOAD, &body)).unwrap();
    req = req.replace(AUTH, "PVEAPIToken=audit@pve!ro=sec");
    let r = exchange(&emu, req.as_bytes());
    assert_eq!(r.status, Some(403));
    assert_eq!(
        r.reason,
        "Permission check failed (/storage/local, Datastore.AllocateTemplate)"
    );
    assert_bodyless(&r);
    assert!(r.elapsed >= Duration::from_millis(150));
    assert!(
        emu.temp_files().is_empty(),
        "the body must not be read into a temp file"
    );
    assert!(emu.tasks().is_empty());
    // A large body during the delay: more than rbuf_max buffered → dropped, no answer (ref §11).
    let big = vec![b'x'; 600 * 1024];
    let body = multipart(
        BOUNDARY,
        &[
            text("content", "vztmpl"),
            file("filename", "x.tar.gz", &big),
        ],
    );
    let req = String::from_utf8_lossy(&upload_request(UPLOAD, &body))
        .replace(AUTH, "PVEAPIToken=audit@pve!ro=sec");
    let r = exchange(&emu, req.as_bytes());
    assert_eq!(r.status, None, "{r:?}");
    let last = emu.requests().pop().unwrap();
    assert_eq!(last.status, None);
    assert!(last.body_len > 520 * 1024);
}

#[test]
fn storage_listing_shapes() {
    let mut cfg = fast();
    cfg.storages.push(StorageConfig::dir(
        "tmpl",
        &["vztmpl", "iso", "snippets", "backup"],
    ));
    cfg.storages.push(StorageConfig {
        kind: "lvmthin".into(),
        ..StorageConfig::dir("local-lvm", &["images", "rootdir"])
    });
    cfg.storages.push(StorageConfig {
        enabled: false,
        ..StorageConfig::dir("off", &["vztmpl"])
    });
    cfg.storages.push(StorageConfig {
        total: 0,
        ..StorageConfig::dir("zero", &["vztmpl"])
    });
    cfg.tokens.push(TokenConfig::with_privs(
        "one@pve",
        "t1",
        "sec",
        "tmpl",
        &["Datastore.Audit"],
    ));
    let emu = start(cfg);
    emu.put_file("pve", "local", "a.tar.zst", &[0u8; 1000]);
    let mut orders = HashSet::new();
    let mut contents = HashSet::new();
    for _ in 0..30 {
        let v = get(&emu, "/nodes/pve/storage").json();
        let arr = v["data"].as_array().unwrap();
        assert_eq!(arr.len(), 5);
        orders.insert(
            arr.iter()
                .map(|s| s["storage"].as_str().unwrap().to_string())
                .collect::<Vec<_>>(),
        );
        let tmpl = arr.iter().find(|s| s["storage"] == "tmpl").unwrap();
        contents.insert(tmpl["content"].as_str().unwrap().to_string());
    }
    assert!(orders.len() > 1, "array order must be random");
    assert!(contents.len() > 1, "content string order must be random");
    for c in &contents {
        let mut parts: Vec<&str> = c.split(',').collect();
        parts.sort();
        assert_eq!(parts, ["backup", "iso", "snippets", "vztmpl"]);
    }
    let v = get(&emu, "/nodes/pve/storage").json();
    let by = |id: &str| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["storage"] == id)
            .unwrap()
            .clone()
    };
    let local = by("local");
    assert_eq!(local["type"], "dir");
    assert_eq!(
        (
            local["shared"].clone(),
            local["enabled"].clone(),
            local["active"].clone()
        ),
        (json!(0), json!(1), json!(1))
    );
    assert_eq!(local["total"], json!(100u64 << 30));
    assert_eq!(local["used"], json!(1000));
    assert_eq!(local["avail"], json!((100u64 << 30) - 1000));
    assert!(local["used_fraction"].is_f64());
    let off = by("off");
    assert_eq!(
        (
            off["enabled"].clone(),
            off["active"].clone(),
            off["total"].clone()
        ),
        (json!(0), json!(0), json!(0))
    );
    assert!(off.get("used_fraction").is_none());
    assert!(by("zero").get("used_fraction").is_none());
    // Filters.
    let v = get(&emu, "/nodes/pve/storage?content=vztmpl").json();
    let mut ids: Vec<String> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["storage"].as_str().unwrap().into())
        .collect();
    ids.sort();
    assert_eq!(ids, ["local", "tmpl", "zero"]);
    let v = get(&emu, "/nodes/pve/storage?enabled=1").json();
    assert_eq!(v["data"].as_array().unwrap().len(), 4);
    let r = get(&emu, "/nodes/pve/storage?storage=nope");
    assert_eq!(r.status, Some(400));
    assert_eq!(r.json()["errors"]["storage"], "No such storage.");
    let r = get(&emu, "/nodes/pve/storage?storage=local-lvm&content=vztmpl");
    assert_eq!(r.json()["errors"]["storage"], "No such storage.");
    let r = get(&emu, "/nodes/pve/storage?content=bogus");
    assert_eq!(
        r.json()["errors"]["content"],
        "invalid format - invalid content type 'bogus'\n"
    );
    // The single-storage status.
    let v = get(&emu, "/nodes/pve/storage/local/status").json()["data"].clone();
    let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "active", "avail", "content", "enabled", "shared", "total", "type", "used"
        ]
    );
    assert_eq!(v["used"], json!(1000));
    assert_eq!(
        get(&emu, "/nodes/pve/storage/nope/status").json()["errors"]["storage"],
        "No such storage."
    );
    // Unauthorised storages are silently omitted.
    let r = exchange(
        &emu,
        &req_with_auth("/nodes/pve/storage", Some("PVEAPIToken=one@pve!t1=sec")),
    );
    let ids: Vec<Value> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["storage"].clone())
        .collect();
    assert_eq!(ids, [json!("tmpl")]);
    let r = exchange(
        &emu,
        &req_with_auth(
            "/nodes/pve/storage?storage=local",
            Some("PVEAPIToken=one@pve!t1=sec"),
        ),
    );
    assert_eq!(r.json(), json!({"data": []}));
}

#[test]
fn content_listing_shapes() {
    let mut cfg = fast();
    cfg.pve_version = "9.1.2".into();
    cfg.tokens.push(limited_token());
    let emu = start(cfg);
    for n in [
        "b.tar.zst",
        "A.tar.gz",
        "c.TAR.XZ",
        "d.tar",
        "e.tar.bz2",
        "f.tgz",
        "g.tar.lzo",
        ".h.tar.gz",
        "notes.txt",
    ] {
        emu.put_file("pve", "local", n, n.as_bytes());
    }
    std::fs::create_dir(
        emu.stored_file("pve", "local", "b.tar.zst")
            .unwrap()
            .with_file_name("dir.tar.gz"),
    )
    .unwrap();
    let v = get(&emu, "/nodes/pve/storage/local/content?content=vztmpl").json();
    let items = v["data"].as_array().unwrap();
    let vol: Vec<&str> = items.iter().map(|i| i["volid"].as_str().unwrap()).collect();
    assert_eq!(
        vol,
        [
            "local:vztmpl/A.tar.gz",
            "local:vztmpl/b.tar.zst",
            "local:vztmpl/c.TAR.XZ",
            "local:vztmpl/d.tar",
            "local:vztmpl/e.tar.bz2"
        ]
    );
    let fmt: Vec<&str> = items
        .iter()
        .map(|i| i["format"].as_str().unwrap())
        .collect();
    assert_eq!(fmt, ["tgz", "tzst", "tXZ", "tar", "tbz2"]);
    let b = &items[1];
    assert_eq!(b["size"], json!(9));
    assert_eq!(b["content"], "vztmpl");
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(emu.stored_file("pve", "local", "b.tar.zst").unwrap()).unwrap();
    assert_eq!(b["ctime"], json!(md.ctime()));
    let mut keys: Vec<&String> = b.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["content", "ctime", "format", "size", "volid"]);
    // Without a content filter, every content type of the storage (only vztmpl/iso emulated).
    assert_eq!(
        get(&emu, "/nodes/pve/storage/local/content").json()["data"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    // A type the storage does not hold: [].
    let emu2 = start(Config {
        storages: vec![StorageConfig::dir("local", &["vztmpl"])],
        ..fast()
    });
    assert_eq!(
        get(&emu2, "/nodes/pve/storage/local/content?content=iso").json(),
        json!({"data": []})
    );
    assert_eq!(
        get(&emu2, "/nodes/pve/storage/local/content?content=nope").json()["errors"]["content"],
        "invalid format - invalid content type 'nope'\n"
    );
    let r = get(&emu2, "/nodes/pve/storage/nope/content");
    assert_eq!(
        (r.status, r.reason.as_str()),
        (Some(500), "storage 'nope' does not exist")
    );
    assert_eq!(
        r.json(),
        json!({"data": null, "message": "storage 'nope' does not exist\n"})
    );
    // AllocateTemplate alone cannot list (ref §2.10).
    let r = exchange(
        &emu,
        &req_with_auth(
            "/nodes/pve/storage/local/content",
            Some("PVEAPIToken=limited@pve!up=sec"),
        ),
    );
    assert_eq!(r.status, Some(403));
    assert_eq!(
        r.reason,
        "Permission check failed (/storage/local, Datastore.Audit|Datastore.AllocateSpace)"
    );
    assert_eq!(
        r.json(),
        json!({"data": null, "message": "Permission check failed (/storage/local, Datastore.Audit|Datastore.AllocateSpace)\n"})
    );
    // 8.2.4 does not list .tar or .tar.bz2.
    let old = start(fast());
    old.put_file("pve", "local", "d.tar", b"x");
    old.put_file("pve", "local", "e.tar.bz2", b"x");
    old.put_file("pve", "local", "z.tar.zst", b"x");
    let v = get(&old, "/nodes/pve/storage/local/content?content=vztmpl").json();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
}

fn do_upload(emu: &pve_emu::Emulator, path: &str, name: &str, data: &[u8]) -> Raw {
    let body = multipart(
        BOUNDARY,
        &[text("content", "vztmpl"), file("filename", name, data)],
    );
    exchange(emu, &upload_request(path, &body))
}

#[test]
fn task_status_and_log_shapes() {
    let emu = start(Config {
        task_duration: Duration::from_millis(600),
        ..fast()
    });
    let r = do_upload(&emu, UPLOAD, "x.tar.gz", b"12345");
    let upid = r.json()["data"].as_str().unwrap().to_string();
    let caps = Regex::new(UPID_REGEX).unwrap().captures(&upid).unwrap();
    let st =
        get(&emu, &format!("/nodes/pve/tasks/{}/status", urlenc(&upid))).json()["data"].clone();
    assert_eq!(st["status"], "running");
    assert!(st.get("exitstatus").is_none());
    assert_eq!(st["upid"], upid);
    assert_eq!(st["node"], "pve");
    assert_eq!(st["type"], "imgcopy");
    assert_eq!(st["id"], "");
    assert_eq!(st["user"], "automation@pve");
    assert_eq!(st["tokenid"], "ci");
    assert_eq!(st["pid"], json!(u64::from_str_radix(&caps[3], 16).unwrap()));
    assert_eq!(
        st["pstart"],
        json!(u64::from_str_radix(&caps[4], 16).unwrap())
    );
    assert_eq!(
        st["starttime"],
        json!(u64::from_str_radix(&caps[5], 16).unwrap())
    );
    let st = wait_task(&emu, "pve", &upid);
    assert_eq!(st["exitstatus"], "OK");
    // Log: n from 1, total next to data, start/limit.
    let v = get(&emu, &format!("/nodes/pve/tasks/{}/log", urlenc(&upid))).json();
    assert_eq!(v["total"], json!(7));
    assert_eq!(v["data"][0]["n"], json!(1));
    assert_eq!(v["data"][6], json!({"n": 7, "t": "TASK OK"}));
    let v = get(
        &emu,
        &format!("/nodes/pve/tasks/{}/log?start=2&limit=2", urlenc(&upid)),
    )
    .json();
    let ns: Vec<u64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, [3, 4]);
    assert_eq!(v["total"], json!(7));
    let v = get(
        &emu,
        &format!("/nodes/pve/tasks/{}/log?start=50", urlenc(&upid)),
    )
    .json();
    assert_eq!(v, json!({"data": [], "total": 7}));
    let r = get(
        &emu,
        &format!("/nodes/pve/tasks/{}/log?limit=-1", urlenc(&upid)),
    );
    assert_eq!(
        r.json()["errors"]["limit"],
        "value must have a minimum value of 0"
    );
    // Unknown tasks.
    let fake = "UPID:pve:00001234:00ABCDEF:66F0A1B2:imgcopy::automation@pve!ci:";
    let r = get(&emu, &format!("/nodes/pve/tasks/{}/status", urlenc(fake)));
    assert_eq!(
        (r.status, r.reason.as_str()),
        (Some(400), "Parameter verification failed.")
    );
    assert_eq!(
        r.json(),
        json!({"data": null, "errors": {"upid": "no such task"}, "message": "Parameter verification failed.\n"})
    );
    let v = get(&emu, &format!("/nodes/pve/tasks/{}/log", urlenc(fake))).json();
    assert_eq!(
        v,
        json!({"data": [{"n": 1, "t": "unable to open file - No such file or directory"}], "total": 1})
    );
    let r = get(&emu, "/nodes/pve/tasks/garbage/status");
    assert_eq!(r.json()["errors"]["upid"], "unable to parse worker upid");
}

#[test]
fn another_tokens_task_needs_sys_audit() {
    let mut cfg = fast();
    cfg.tokens.push(TokenConfig::full("other@pve", "tk", "sec"));
    cfg.tokens
        .push(TokenConfig::full("automation@pve", "second", "sec2"));
    let emu = start(cfg);
    let upid = do_upload(&emu, UPLOAD, "x.tar.gz", b"1").json()["data"]
        .as_str()
        .unwrap()
        .to_string();
    let p = format!("/nodes/pve/tasks/{}/status", urlenc(&upid));
    let r = exchange(
        &emu,
        &req_with_auth(&p, Some("PVEAPIToken=other@pve!tk=sec")),
    );
    assert_eq!(r.status, Some(403));
    assert_eq!(r.reason, "Permission check failed (/nodes/pve, Sys.Audit)");
    // "token only sees token tasks": a sibling token of the same user does not see it either.
    let r = exchange(
        &emu,
        &req_with_auth(&p, Some("PVEAPIToken=automation@pve!second=sec2")),
    );
    assert_eq!(r.status, Some(403));
}

#[test]
fn cluster_uploads_to_another_node() {
    let cfg = Config {
        nodes: vec!["pve".into(), "pve2".into()],
        ..fast()
    };
    let emu = start(cfg);
    let r = do_upload(
        &emu,
        "/api2/json/nodes/pve2/storage/local/upload",
        "x.tar.gz",
        b"abc",
    );
    let upid = r.json()["data"].as_str().unwrap().to_string();
    // The task runs on (and is known only to) the node that received the request.
    assert!(upid.starts_with("UPID:pve:"), "{upid}");
    let r = get(&emu, &format!("/nodes/pve2/tasks/{}/status", urlenc(&upid)));
    assert_eq!(r.json()["errors"]["upid"], "no such task");
    assert_eq!(wait_task(&emu, "pve", &upid)["exitstatus"], "OK");
    let log = task_log(&emu, "pve", &upid);
    assert_eq!(log[1], "target node: pve2");
    assert!(log[4].starts_with("command: /usr/bin/scp "), "{log:?}");
    assert!(emu.stored_file("pve2", "local", "x.tar.gz").is_some());
    assert!(emu.stored_file("pve", "local", "x.tar.gz").is_none());
    // node=localhost is the local node.
    let r = do_upload(
        &emu,
        "/api2/json/nodes/localhost/storage/local/upload",
        "y.tar.gz",
        b"abc",
    );
    let upid = r.json()["data"].as_str().unwrap().to_string();
    assert_eq!(wait_task(&emu, "pve", &upid)["exitstatus"], "OK");
    assert!(emu.stored_file("pve", "local", "y.tar.gz").is_some());
    // A node outside the cluster.
    let r = do_upload(
        &emu,
        "/api2/json/nodes/ghost/storage/local/upload",
        "z.tar.gz",
        b"abc",
    );
    assert_eq!(r.status, Some(500));
    assert_eq!(
        r.reason,
        "hostname lookup 'ghost' failed - failed to get address info for: ghost: Name or service not known"
    );
    let r = get(&emu, "/nodes/ghost/storage");
    assert_eq!(r.status, Some(500));
}

#[test]
fn handler_checks_in_order() {
    let mut cfg = fast();
    cfg.storages.push(StorageConfig::dir("isos", &["iso"]));
    cfg.storages.push(StorageConfig {
        kind: "lvmthin".into(),
        ..StorageConfig::dir("thin", &["rootdir"])
    });
    cfg.storages.push(StorageConfig {
        enabled: false,
        ..StorageConfig::dir("off", &["vztmpl"])
    });
    cfg.storages.push(StorageConfig {
        nodes: Some(vec!["other".into()]),
        ..StorageConfig::dir("elsewhere", &["vztmpl"])
    });
    let emu = start(cfg);
    let up = |storage: &str, name: &str| {
        do_upload(
            &emu,
            &format!("/api2/json/nodes/pve/storage/{storage}/upload"),
            name,
            b"data",
        )
    };
    let r = up("local", "x.tgz");
    assert_eq!(r.status, Some(400));
    assert_eq!(
        r.json(),
        json!({"data": null, "errors": {"filename": "wrong file extension"}, "message": "Parameter verification failed.\n"})
    );
    // Wrong extension is reported before missing content support.
    assert_eq!(
        up("isos", "x.tgz").json()["errors"]["filename"],
        "wrong file extension"
    );
    let r = up("isos", "x.tar.gz");
    assert_eq!(
        (r.status, r.reason.as_str()),
        (
            Some(500),
            "storage 'isos' does not support 'vztmpl' content"
        )
    );
    assert_eq!(
        up("thin", "x.tar.gz").reason,
        "can't upload to storage type 'lvmthin'"
    );
    assert_eq!(
        up("nope", "x.tar.gz").reason,
        "storage 'nope' does not exist"
    );
    assert_eq!(up("off", "x.tar.gz").reason, "storage 'off' is disabled");
    assert_eq!(
        up("elsewhere", "x.tar.gz").reason,
        "storage 'elsewhere' is not available on node 'pve'"
    );
    // bz2 is accepted from the 8.3 generation on, not by 8.2.4.
    assert_eq!(up("local", "x.tar.bz2").status, Some(400));
    // Normalisation: path stripped, odd characters become '_'.
    let r = up("local", "C:\\tmp\\my template+v1.tar.gz");
    let upid = r.json()["data"].as_str().unwrap().to_string();
    wait_task(&emu, "pve", &upid);
    assert!(
        emu.stored_file("pve", "local", "my_template_v1.tar.gz")
            .is_some()
    );
    // Query parameters: unknown → 400, conflicting path parameter → 400.
    let body = multipart(
        BOUNDARY,
        &[
            text("content", "vztmpl"),
            file("filename", "q.tar.gz", b"d"),
        ],
    );
    let r = exchange(&emu, &upload_request(&format!("{UPLOAD}?foo=bar"), &body));
    assert_eq!(
        r.json()["errors"]["foo"],
        "property is not defined in schema and the schema does not allow additional properties"
    );
    let r = exchange(
        &emu,
        &upload_request(&format!("{UPLOAD}?node=other"), &body),
    );
    assert_eq!(
        r.json()["errors"]["node"],
        "duplicate parameter (already defined in URI) with conflicting values!"
    );
    let long = format!("{}.tar.gz", "a".repeat(250));
    assert_eq!(
        up("local", &long).json()["errors"]["filename"],
        "value may only be 255 characters long"
    );
    // Handler errors before the task leave the temp file behind (ref §2.12).
    assert!(!emu.temp_files().is_empty());
}

#[test]
fn existing_files_are_overwritten_silently() {
    let emu = start(fast());
    emu.put_file("pve", "local", "x.tar.gz", b"old");
    let upid = do_upload(&emu, UPLOAD, "x.tar.gz", b"new content").json()["data"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(wait_task(&emu, "pve", &upid)["exitstatus"], "OK");
    assert_eq!(
        std::fs::read(emu.stored_file("pve", "local", "x.tar.gz").unwrap()).unwrap(),
        b"new content"
    );
}

#[test]
fn delete_needs_allocate_and_missing_files_are_fine() {
    let mut cfg = fast();
    cfg.tokens.push(TokenConfig::with_privs(
        "tpl@pve",
        "up",
        "sec",
        "*",
        &["Datastore.AllocateTemplate", "Datastore.Audit"],
    ));
    let emu = start(cfg);
    emu.put_file("pve", "local", "x.tar.gz", b"x");
    let del = |path: &str, auth: &str| {
        let r = format!(
            "DELETE /api2/json{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
        );
        exchange(&emu, r.as_bytes())
    };
    // Volume info (needs read access, not Allocate).
    let v = get(
        &emu,
        "/nodes/pve/storage/local/content/local:vztmpl/x.tar.gz",
    )
    .json();
    assert_eq!(v["data"]["path"], "/var/lib/vz/template/cache/x.tar.gz");
    assert_eq!(
        (v["data"]["size"].clone(), v["data"]["format"].clone()),
        (json!(1), json!("raw"))
    );
    let r = get(&emu, "/nodes/pve/storage/local/content/vztmpl/none.tar.gz");
    assert_eq!(
        (r.status, r.reason.as_str()),
        (
            Some(500),
            "volume_size_info on 'local:vztmpl/none.tar.gz' failed - no format"
        )
    );
    let r = del(
        "/nodes/pve/storage/local/content/local:vztmpl/x.tar.gz",
        "PVEAPIToken=tpl@pve!up=sec",
    );
    assert_eq!(
        (r.status, r.reason.as_str()),
        (
            Some(403),
            "Permission check failed (/storage/local, Datastore.Allocate)"
        )
    );
    let r = del(
        "/nodes/pve/storage/local/content/local%3Avztmpl%2Fx.tar.gz",
        AUTH,
    );
    let upid = r.json()["data"].as_str().unwrap().to_string();
    assert!(upid.ends_with(":imgdel:local:automation@pve!ci:"), "{upid}");
    assert_eq!(wait_task(&emu, "pve", &upid)["exitstatus"], "OK");
    assert!(emu.stored_file("pve", "local", "x.tar.gz").is_none());
    assert_eq!(
        task_log(&emu, "pve", &upid),
        ["Removed volume 'local:vztmpl/x.tar.gz'", "TASK OK"]
    );
    // Gone already: still OK, with a note in the log; relative names work too.
    let r = del("/nodes/pve/storage/local/content/vztmpl/x.tar.gz", AUTH);
    let upid = r.json()["data"].as_str().unwrap().to_string();
    assert_eq!(wait_task(&emu, "pve", &upid)["exitstatus"], "OK");
    assert_eq!(
        task_log(&emu, "pve", &upid),
        [
            "disk image '/var/lib/vz/template/cache/x.tar.gz' does not exist",
            "Removed volume 'local:vztmpl/x.tar.gz'",
            "TASK OK"
        ]
    );
    // delay: null when the task finished in time.
    emu.put_file("pve", "local", "y.tar.gz", b"y");
    let r = del(
        "/nodes/pve/storage/local/content/local:vztmpl/y.tar.gz?delay=5",
        AUTH,
    );
    assert_eq!(r.json(), json!({"data": null}));
    let r = del(
        "/nodes/pve/storage/local/content/other:vztmpl/y.tar.gz",
        AUTH,
    );
    assert_eq!(
        r.json()["errors"]["volume"],
        "storage ID mismatch (other != local)\n"
    );
    let r = del("/nodes/pve/storage/local/content/vztmpl/x.txt", AUTH);
    assert_eq!(
        (r.status, r.reason.as_str()),
        (
            Some(500),
            "unable to parse directory volume name 'vztmpl/x.txt'"
        )
    );
}

#[test]
fn unknown_paths_and_methods() {
    let emu = start(fast());
    let r = get(&emu, "/nodes/pve/nothing");
    assert_eq!(
        (r.status, r.reason.as_str()),
        (Some(501), "Method 'GET /nodes/pve/nothing' not implemented")
    );
    assert_eq!(
        r.json(),
        json!({"data": null, "message": "Method 'GET /nodes/pve/nothing' not implemented"})
    );
    let r = exchange(
        &emu,
        b"PATCH /api2/json/version HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(
        (r.status, r.reason.as_str()),
        (Some(501), "method 'PATCH' not available")
    );
    let r = exchange(&emu, &request("GET", "/api2/json/version", &[], b"abc"));
    assert_eq!(
        (r.status, r.reason.as_str()),
        (Some(501), "Unexpected content for method 'GET'")
    );
    // storage//upload is not recognised as an upload (ref §2.1): a multipart body → 506, or
    // 501 when Content-Length is above limit_max_post. pveproxy answers from the header alone
    // and closes, so only the header is sent here (with a body in flight the client would
    // likely see a reset instead, as with real Proxmox).
    let head = |len: usize| {
        format!(
            "POST /api2/json/nodes/pve/storage//upload HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    let r = exchange(&emu, head(1000).as_bytes());
    assert_eq!(r.status, Some(506));
    assert_eq!(
        r.reason,
        format!("upload 'Content-Type 'multipart/form-data; boundary={BOUNDARY}' not implemented")
    );
    let r = exchange(&emu, head(600 * 1024).as_bytes());
    assert_eq!(
        (r.status, r.reason.as_str()),
        (Some(501), "for data too large")
    );
    // Keep-alive for GETs without Connection: close.
    let two = b"GET /api2/json/version HTTP/1.1\r\nHost: x\r\nAuthorization: PVEAPIToken=automation@pve!ci=00000000-0000-4000-8000-000000000001\r\n\r\nGET /api2/json/version HTTP/1.1\r\nHost: x\r\nAuthorization: PVEAPIToken=automation@pve!ci=00000000-0000-4000-8000-000000000001\r\nConnection: close\r\n\r\n";
    let r = exchange(&emu, two);
    assert_eq!(r.header("Connection"), Some("Keep-Alive"));
    assert_eq!(
        String::from_utf8_lossy(&r.body)
            .matches("HTTP/1.1 200 OK")
            .count(),
        1
    );
}

#[test]
fn plain_http_is_redirected() {
    let emu = start(fast());
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(emu.addr()).unwrap();
    s.write_all(b"GET /api2/json/version HTTP/1.1\r\nHost: 127.0.0.1:8006\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 301 Moved Permanently\r\n"),
        "{out}"
    );
    assert!(
        out.contains("\r\nLocation: https://127.0.0.1:8006/api2/json/version\r\n"),
        "{out}"
    );
}

#[test]
fn listen_address_must_be_loopback() {
    let cfg = Config {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..fast()
    };
    let e = pve_emu::Emulator::start_blocking(cfg)
        .err()
        .expect("must refuse");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    let cfg = Config {
        listen: "127.0.0.2:0".parse().unwrap(),
        ..fast()
    };
    let emu = start(cfg);
    assert!(emu.base_url().starts_with("https://127.0.0.2:"));
}

#[test]
fn fingerprint_and_urls() {
    let emu = start(fast());
    let fp = emu.fingerprint_sha256();
    assert!(
        Regex::new("^([0-9A-F]{2}:){31}[0-9A-F]{2}$")
            .unwrap()
            .is_match(&fp),
        "{fp}"
    );
    use sha2::Digest;
    let der_fp: Vec<String> = sha2::Sha256::digest(emu.cert_der())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    assert_eq!(fp, der_fp.join(":"));
    assert!(emu.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(emu.api_url(), format!("{}/api2/json", emu.base_url()));
    // The certificate verifies for localhost too.
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
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(cfg), "localhost".try_into().unwrap())
            .unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    use std::io::{Read, Write};
    s.write_all(b"GET /api2/json/version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        out.starts_with(b"HTTP/1.1 401 No ticket"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn older_http_server_shapes() {
    // libpve-http-server-perl < 5.2.0: no `message`, http-server errors are 501 with no body,
    // and (< 5.2.1) rbuf_max / limit_max_post are 64 KiB (ref §0.2, §7).
    let emu = start(Config {
        http_server_version: "5.1.2".into(),
        ..fast()
    });
    let r = get(&emu, "/nodes/pve/storage/nope/content");
    assert_eq!(
        (r.status, r.reason.as_str()),
        (Some(500), "storage 'nope' does not exist")
    );
    assert_eq!(r.json(), json!({"data": null}));
    let r = get(&emu, "/nodes/pve/tasks/garbage/status");
    assert_eq!(
        r.json(),
        json!({"data": null, "errors": {"upid": "unable to parse worker upid"}})
    );
    let body = multipart(
        BOUNDARY,
        &[text("content", "vztmpl"), file("file", "x.tar.gz", b"d")],
    );
    let r = exchange(&emu, &upload_request(UPLOAD, &body));
    assert_eq!(r.status, Some(501));
    assert!(
        r.reason.starts_with("wrong field name 'file'"),
        "{}",
        r.reason
    );
    assert!(r.body.is_empty());
    let head = format!(
        "POST /api2/json/nodes/pve/storage//upload HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: {}\r\n\r\n",
        100 * 1024
    );
    assert_eq!(exchange(&emu, head.as_bytes()).reason, "for data too large");
}
