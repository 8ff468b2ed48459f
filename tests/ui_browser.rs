//! The web UI in a real browser: Debian's headless Chromium, driven over the
//! DevTools protocol (CDP) on a pipe (`--remote-debugging-pipe`: the
//! protocol's JSON messages, NUL-terminated, on file descriptors 3 and 4),
//! so the test needs neither a WebSocket client nor a free port, and no
//! crate that downloads its own browser. Every view loads with no console
//! error, a hostile backbone name shows as text, a new epoch appears without
//! a reload, stop works from the page; screenshots go to
//! target/ui-screenshots. Skips, saying so, where Chromium is missing
//! (`scripts/install-chromium` installs it).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use bocb_store::{EpochMetrics, ExperimentRecord, GridPos, Store, TrialRecord, TrialStatus};
use common::{start_service, synth, wait_for, PATIENCE};
use serde_json::{json, Value};

const XSS: &str = "<img src=x onerror=alert(1)>";

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// A headless Chromium and one page in it, attached over the pipe.
struct Browser {
    child: Child,
    to_browser: std::fs::File,
    from_browser: Receiver<Value>,
    next_id: u64,
    session: String,
    /// Console errors, uncaught exceptions, failed loads, dialogs.
    problems: Vec<String>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe(2) failed");
    // SAFETY: both were just opened and are owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    fn launch(chromium: &Path, profile: &Path) -> Browser {
        use std::os::fd::AsRawFd;
        // The browser reads commands on fd 3 and writes answers on fd 4.
        let (command_read, command_write) = pipe();
        let (answer_read, answer_write) = pipe();
        let (cr, aw) = (command_read.as_raw_fd(), answer_write.as_raw_fd());
        let mut command = Command::new(chromium);
        command
            .args([
                "--headless=new",
                "--remote-debugging-pipe",
                // Root (CI containers) may not use the sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe dup2 calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(cr, 3) < 0 || libc::dup2(aw, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("chromium starts");
        drop((command_read, answer_write));
        let (sender, from_browser) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(std::fs::File::from(answer_read));
            loop {
                let mut message = Vec::new();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        message.pop();
                        let Ok(value) = serde_json::from_slice(&message) else {
                            continue;
                        };
                        if sender.send(value).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut browser = Browser {
            child,
            to_browser: std::fs::File::from(command_write),
            from_browser,
            next_id: 0,
            session: String::new(),
            problems: Vec::new(),
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session")
            .to_string();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({}));
        }
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
        );
        browser
    }

    /// Sends a command (to the page once attached) and waits for its answer.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to_browser.write_all(&bytes).expect("chromium reads");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let value = match self.from_browser.recv_timeout(left) {
                Ok(value) => value,
                Err(RecvTimeoutError::Timeout) => panic!("chromium did not answer {method}"),
                Err(RecvTimeoutError::Disconnected) => panic!("chromium exited during {method}"),
            };
            if value["id"] == id {
                assert!(
                    value.get("error").is_none(),
                    "{method} failed: {}",
                    value["error"]
                );
                return value["result"].clone();
            }
            self.note_event(&value);
        }
    }

    /// Keeps what a page must never do.
    fn note_event(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => self
                .problems
                .push(format!("exception: {}", params["exceptionDetails"])),
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => self
                .problems
                .push(format!("console.error: {}", params["args"])),
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => self
                .problems
                .push(format!("log: {}", params["entry"]["text"])),
            Some("Page.javascriptDialogOpening") => {
                self.problems
                    .push(format!("a dialog opened: {}", params["message"]));
            }
            _ => {}
        }
    }

    fn eval(&mut self, expression: &str) -> Value {
        let answer = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        assert!(
            answer.get("exceptionDetails").is_none(),
            "{expression} threw: {}",
            answer["exceptionDetails"]
        );
        answer["result"]["value"].clone()
    }

    /// Polls `expression` until it is true.
    fn wait_until(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + PATIENCE;
        while self.eval(expression) != json!(true) {
            assert!(Instant::now() < deadline, "gave up waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Opens `hash` in the page and waits until its view drew its data.
    fn open(&mut self, hash: &str, view: &str) {
        self.eval(&format!("location.hash = {}", json!(hash)));
        self.wait_until(
            &format!("the {view} view of {hash}"),
            &format!(
                "document.body.dataset.view === {} && document.body.dataset.loaded === '1'",
                json!(view)
            ),
        );
    }

    fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64_decode(shot["data"].as_str().expect("image data"));
        std::fs::write(path, png).unwrap();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            n |= u32::from(b) << (18 - 6 * i);
        }
        out.extend(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// One HTTP request to the service; answers status and body.
fn http(url: &str, method: &str, path: &str, token: &str, body: &Value) -> (u16, Value) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, base) = rest
        .split_once('/')
        .map_or((rest, String::new()), |(h, b)| (h, format!("/{b}")));
    let body = body.to_string();
    let mut stream = TcpStream::connect(host).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "{method} {base}{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let json = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

fn epoch(n: u32, accuracy: f64) -> EpochMetrics {
    EpochMetrics {
        epoch: n,
        train_loss: 2.0 / f64::from(n),
        test_loss: 2.0 / f64::from(n),
        test_accuracy: accuracy,
        lr: 0.01,
        images_per_sec: 1000.0,
        wall_s: 1.0,
        ema_test_accuracy: None,
    }
}

/// A finished experiment written to the store: three backbones (one named
/// like an HTML element) by three optimizers, each a 5x5 grid with curves.
fn seed_gallery(store: &Path) {
    let store = Store::open(store).unwrap();
    let backbones = ["resnet18_cifar", "vit_t", XSS];
    let optimizers = ["adamw", "sgd_m", "lion"];
    let yaml = format!(
        "name: gallery\ndataset: {{ format: cifar100-bin, path: data }}\nbackbones: [resnet18_cifar, vit_t, {}]\noptimizers: [adamw, sgd_m, lion]\nepochs: 12\nbatch_size: 16\nbudget: {{ trials: 25 }}\ndevice: cpu\n",
        json!(XSS)
    );
    store
        .put_experiment(&ExperimentRecord {
            name: "gallery".to_string(),
            spec_yaml: yaml,
            created_unix_s: 1_700_000_000,
            updated_unix_s: 1_700_000_000,
            base_dir: None,
        })
        .unwrap();
    for (b, backbone) in backbones.iter().enumerate() {
        for (o, optimizer) in optimizers.iter().enumerate() {
            for i in 0..5u8 {
                for j in 0..5u8 {
                    let lr = 1e-4 * 4f64.powi(i32::from(i));
                    let wd = 1e-3 * 4f64.powi(i32::from(j));
                    // A ridge near the middle, lower for lion on vit_t (a failure).
                    let peak = 60.0 + 8.0 * b as f64
                        - 4.0 * o as f64
                        - if (b, o) == (1, 2) { 35.0 } else { 0.0 };
                    let top = peak
                        - 6.0
                            * ((f64::from(i) - 2.0).powi(2) + (f64::from(j) - 1.5).powi(2)).sqrt();
                    let diverged = i == 4 && j >= 3;
                    let stopped = !diverged && top < peak - 14.0;
                    let epochs = if diverged {
                        3
                    } else if stopped {
                        5
                    } else {
                        12
                    };
                    let curve: Vec<EpochMetrics> = (1..=epochs)
                        .map(|n| epoch(n, top * (1.0 - (-0.35 * f64::from(n)).exp())))
                        .collect();
                    let status = if diverged {
                        TrialStatus::Diverged
                    } else if stopped {
                        TrialStatus::Stopped
                    } else {
                        TrialStatus::Done
                    };
                    let id = format!("g{b}{o}{i}{j}");
                    store
                        .put_trial(&TrialRecord {
                            params: BTreeMap::from([
                                ("lr".to_string(), lr),
                                ("weight_decay".to_string(), wd),
                            ]),
                            grid: Some(GridPos {
                                lr: i,
                                weight_decay: j,
                            }),
                            status,
                            final_accuracy: (status == TrialStatus::Done)
                                .then(|| curve.last().unwrap().test_accuracy),
                            wall_time_s: Some(40.0 + f64::from(i)),
                            device: Some("cpu".to_string()),
                            error: diverged.then(|| "loss became NaN at epoch 3".to_string()),
                            epochs: curve,
                            created_unix_s: 1_700_000_000 + u64::from(i * 5 + j),
                            ..TrialRecord::new("gallery", &id, backbone, optimizer)
                        })
                        .unwrap();
                }
            }
        }
    }
}

const LIVE: &str = "\
name: live
dataset: { format: cifar100-bin, path: data }
backbones: [resnet18_cifar]
preset: micro
optimizers: [adamw]
epochs: 6
batch_size: 16
budget: { trials: 2 }
device: cpu
";

#[test]
fn every_view_works_in_a_real_browser() {
    let Some(chromium) = find_chromium() else {
        eprintln!("SKIPPED: no `chromium` on PATH; the browser tests need Debian's `chromium` package (scripts/install-chromium installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    seed_gallery(&store);
    synth(&dir.path().join("data"), 64, 32, 5);
    let shots = std::env::var_os("BOCB_UI_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots"));
    std::fs::create_dir_all(&shots).unwrap();

    let _service = start_service(&store, &["--workers", "none", "--base-path", "/bocb"]);
    let url = std::fs::read_to_string(store.join("service-url"))
        .unwrap()
        .trim()
        .to_string();
    assert!(url.ends_with("/bocb"), "{url}");
    let token = std::fs::read_to_string(store.join("service-token")).unwrap();

    // Data needs the token; the page itself does not.
    assert_eq!(
        http(&url, "GET", "/api/ui/experiments", "wrong", &json!({})).0,
        401
    );
    let (status, submitted) = http(
        &url,
        "POST",
        "/api/experiments",
        &token,
        &json!({ "yaml": LIVE, "base": dir.path(), "origin": "live.yaml" }),
    );
    assert_eq!(status, 201, "{submitted}");
    // The test is the worker: it claims the trial and reports its epochs.
    let mut assignment = Value::Null;
    wait_for("the live trial to be queued", || {
        let (status, answer) = http(
            &url,
            "POST",
            "/api/worker/claim",
            &token,
            &json!({ "worker": "test-worker", "device": "cpu" }),
        );
        assignment = answer;
        status == 200
    });
    let attempt = assignment["attempt"].as_u64().unwrap();
    let trial = assignment["trial"].as_str().unwrap().to_string();
    let report = |n: u32| {
        let (status, answer) = http(
            &url,
            "POST",
            "/api/worker/epoch",
            &token,
            &json!({ "attempt": attempt, "report": epoch(n, 20.0 + 5.0 * f64::from(n)) }),
        );
        assert_eq!(status, 200, "{answer}");
    };
    let start = json!({ "attempt": attempt, "epochs_done": 0 });
    assert_eq!(
        http(&url, "POST", "/api/worker/start", &token, &start).0,
        200
    );
    let heartbeat = json!({ "attempt": attempt, "log": "epoch 1: training on cpu\n" });
    assert_eq!(
        http(&url, "POST", "/api/worker/heartbeat", &token, &heartbeat).0,
        200
    );
    report(1);

    let mut browser = Browser::launch(&chromium, &dir.path().join("profile"));
    browser.call(
        "Page.navigate",
        json!({ "url": format!("{url}/#token={token}") }),
    );
    browser.wait_until(
        "the experiments list",
        "!!document.body && document.body.dataset.view === 'experiments' && document.body.dataset.loaded === '1'",
    );
    assert_eq!(
        browser.eval("location.hash"),
        json!("#/"),
        "the token leaves the address bar"
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('#experiments tbody tr').length"),
        json!(2)
    );
    browser.screenshot(&shots.join("experiments.png"));

    let views = [
        ("#/e/gallery", "experiment", "experiment.png"),
        (
            "#/e/gallery/pair?b=resnet18_cifar&o=adamw",
            "pair",
            "pair.png",
        ),
        ("#/e/gallery/trials", "trials", "trials.png"),
        ("#/e/gallery/t/g0011", "trial", "trial.png"),
        ("#/e/gallery/parallel", "parallel", "parallel.png"),
        ("#/e/gallery/analyses", "analyses", "analyses.png"),
        ("#/submit", "submit", "submit.png"),
    ];
    for (hash, view, file) in views {
        browser.open(hash, view);
        // Charts and the report's frame draw after the data arrives.
        std::thread::sleep(Duration::from_millis(400));
        browser.screenshot(&shots.join(file));
    }

    // The hostile backbone is text wherever it shows, never an element.
    for (hash, view) in [
        ("#/e/gallery", "experiment"),
        ("#/e/gallery/trials", "trials"),
    ] {
        browser.open(hash, view);
        assert_eq!(
            browser.eval("document.querySelectorAll('main img').length"),
            json!(0)
        );
        let shown = browser.eval(&format!(
            "document.getElementById('main').textContent.includes({})",
            json!(XSS)
        ));
        assert_eq!(shown, json!(true), "{view} shows the name as written");
    }
    browser.open(
        &format!("#/e/gallery/pair?b={}&o=adamw", urlencode(XSS)),
        "pair",
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('main img').length"),
        json!(0)
    );

    browser.eval("1");
    assert!(
        browser.problems.is_empty(),
        "the views logged problems: {:#?}",
        browser.problems
    );

    // Submit shows a validation error at its line.
    browser.open("#/submit", "submit");
    browser.eval("document.getElementById('yaml').value = 'name: bad\\nepochs: [oops\\n'; document.getElementById('submit').click()");
    browser.wait_until(
        "the validation error",
        "!!document.getElementById('submit-error')",
    );
    let message = browser.eval("document.getElementById('submit-error').textContent");
    assert!(
        message.as_str().unwrap().starts_with("Line 2, column 9: "),
        "the error names its line: {message}"
    );
    // The refused submission is the one failed request the page saw.
    assert_eq!(
        std::mem::take(&mut browser.problems),
        ["log: \"Failed to load resource: the server responded with a status of 400 (Bad Request)\""]
    );
    // The page selects the line the error points at.
    assert_eq!(
        browser.eval("(() => { const t = document.getElementById('yaml'); return t.value.slice(t.selectionStart, t.selectionEnd); })()"),
        json!("epochs: [oops")
    );

    // A new epoch appears on the trial page without a reload.
    browser.open(&format!("#/e/live/t/{trial}"), "trial");
    browser.eval("window.notReloaded = true");
    browser.wait_until(
        "the first epoch",
        "document.getElementById('epoch-count').textContent === '1 epochs'",
    );
    browser.wait_until(
        "the log",
        "document.getElementById('log').textContent.includes('training on cpu')",
    );
    report(2);
    browser.wait_until(
        "the second epoch, live",
        "document.getElementById('epoch-count').textContent === '2 epochs'",
    );
    assert_eq!(browser.eval("window.notReloaded === true"), json!(true));
    browser.screenshot(&shots.join("trial-live.png"));

    // "Copy as timm args" copies this trial's own config.
    let (_, shown) = http(
        &url,
        "GET",
        &format!("/api/ui/experiments/live/trials/{trial}"),
        &token,
        &json!({}),
    );
    let lr = shown["params"]["lr"].as_f64().unwrap();
    browser.eval("document.getElementById('copy-timm').click()");
    browser.wait_until(
        "the trial's timm args",
        "!document.getElementById('timm').hidden",
    );
    let args = browser.eval("document.getElementById('timm').textContent");
    let args = args.as_str().unwrap();
    assert!(
        args.contains(&format!("--lr {lr} ")) && args.contains(&format!("trial {trial}")),
        "{args}"
    );

    // Stop the trial from its page: recorded as stopped, never a result;
    // its worker hears that it is gone; the experiment goes on.
    browser.eval("document.getElementById('stop-trial').click()");
    browser.wait_until(
        "the trial's stopped state",
        "document.getElementById('stop-trial').disabled && document.querySelector('#main .kv').textContent.includes('stopped')",
    );
    let (_, stopped) = http(
        &url,
        "GET",
        &format!("/api/ui/experiments/live/trials/{trial}"),
        &token,
        &json!({}),
    );
    assert_eq!(stopped["status"], "stopped");
    assert_eq!(stopped["accuracy"], Value::Null);
    let (status, _) = http(
        &url,
        "POST",
        "/api/worker/epoch",
        &token,
        &json!({ "attempt": attempt, "report": epoch(3, 40.0) }),
    );
    assert_eq!(status, 410, "the worker drops the stopped trial");
    let (status, answer) = http(
        &url,
        "POST",
        &format!("/api/experiments/live/trials/{trial}/stop"),
        &token,
        &json!({}),
    );
    assert_eq!(status, 409, "{answer}");
    browser.screenshot(&shots.join("trial-stopped.png"));

    // An idle worker (asking for work of an experiment with none) is listed.
    let (status, _) = http(
        &url,
        "POST",
        "/api/worker/claim",
        &token,
        &json!({ "worker": "idle-worker", "device": "cpu", "experiment": "gallery" }),
    );
    assert_eq!(status, 204);

    // Stop from the experiment page.
    browser.open("#/e/live", "experiment");
    browser.wait_until(
        "the worker's row",
        "!!document.getElementById('workers') && document.getElementById('workers').textContent.includes('idle-worker')",
    );
    let workers = browser.eval("document.getElementById('workers').textContent");
    assert!(
        workers.as_str().unwrap().contains("idle-worker")
            && workers.as_str().unwrap().contains("idle"),
        "{workers}"
    );
    browser.screenshot(&shots.join("experiment-live.png"));
    browser.eval("document.getElementById('stop').click()");
    browser.wait_until(
        "the stopped state on the page",
        "document.querySelector('main .state') && document.querySelector('main .state').textContent === 'stopped'",
    );
    let (_, status) = http(&url, "GET", "/api/experiments/live", &token, &json!({}));
    assert_eq!(status["state"], "stopped");

    // Drains what arrived after the last command.
    browser.eval("1");
    assert!(
        browser.problems.is_empty(),
        "the page logged problems: {:#?}",
        browser.problems
    );
    eprintln!("screenshots in {}", shots.display());
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
