//! A real browser for the dashboard tests: Debian's headless Chromium,
//! driven through chromedriver's W3C WebDriver protocol (plain HTTP and
//! JSON, spoken with reqwest). Each [`Browser`] is its own chromedriver on
//! a free port with its own profile directory, closed when dropped.
//!
//! `.ci/run` installs both (`apt-get install chromium chromium-driver`);
//! without them the tests fail saying so, never skip.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::ScratchDir;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The window every test sees, and the screenshot's size.
pub(crate) const WIDTH: u32 = 1200;
pub(crate) const HEIGHT: u32 = 800;

pub(crate) struct Browser {
    http: reqwest::Client,
    driver: SocketAddr,
    /// `http://DRIVER/session/ID`.
    session: String,
    _process: tokio::process::Child,
    _profile: ScratchDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub(crate) async fn start() -> Browser {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                std::path::Path::new(path).exists(),
                "the dashboard tests drive a real browser and need {path}: \
                 apt-get install {package} (.ci/run installs it)"
            );
        }
        let profile = ScratchDir::new("chromium");
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let driver = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(profile.path().join("chromedriver.log")).unwrap();
        let process = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = http.get(format!("http://{driver}/status")).send().await;
            if let Ok(response) = status
                && let Ok(body) = response.json::<Value>().await
                && body["value"]["ready"] == true
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not come up on {driver}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let args = json!([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            format!("--window-size={WIDTH},{HEIGHT}"),
            format!("--user-data-dir={}", profile.path().display()),
        ]);
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "timeouts": {"script": 20_000, "pageLoad": 20_000},
        }}});
        let response = http
            .post(format!("http://{driver}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver answers");
        let body: Value = response.json().await.expect("a JSON answer");
        let id = body["value"]["sessionId"].as_str().unwrap_or_else(|| {
            let log = std::fs::read_to_string(profile.path().join("chromedriver.log"))
                .unwrap_or_default();
            panic!("no browser session: {body}\n{log}")
        });
        let browser = Browser {
            session: format!("http://{driver}/session/{id}"),
            http,
            driver,
            _process: process,
            _profile: profile,
        };
        // --window-size is the window's, frame included: size it so that
        // the page itself (and a screenshot) gets WIDTH×HEIGHT.
        let frame = browser
            .eval(
                "return [outerWidth - innerWidth, outerHeight - innerHeight];",
                json!([]),
            )
            .await;
        let (dx, dy) = (
            frame[0].as_u64().unwrap_or(0),
            frame[1].as_u64().unwrap_or(0),
        );
        browser
            .command(
                reqwest::Method::POST,
                "/window/rect",
                Some(json!({"width": u64::from(WIDTH) + dx, "height": u64::from(HEIGHT) + dy})),
            )
            .await;
        browser
    }

    /// One WebDriver command; the answer's `value`, panicking on an error.
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("chromedriver answers");
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON answer");
        assert!(status.is_success(), "WebDriver {path}: {status} {body}");
        body["value"].clone()
    }

    /// Loads `url` and waits for the page to load.
    pub(crate) async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` (a function body: `return …`) in the page with
    /// `arguments` `args`; returns what it returned.
    pub(crate) async fn eval(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Evaluates `script` every 100 ms until it returns something other
    /// than `null` or `false`, and returns that; panics after `limit`,
    /// saying `what` was awaited and what the page showed.
    pub(crate) async fn until(
        &self,
        what: &str,
        limit: Duration,
        script: &str,
        args: Value,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.eval(script, args.clone()).await;
            if !value.is_null() && value != false {
                return value;
            }
            if Instant::now() > deadline {
                let page = self
                    .eval(
                        "return {text: document.body.innerText.slice(0, 3000), stats: window.signpostStats};",
                        json!([]),
                    )
                    .await;
                panic!("waited {limit:?} for {what}; the page: {page:#}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element matching `css` (the first), as a WebDriver reference.
    async fn find(&self, css: &str) -> String {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    /// Types `text` into the element matching `css`, as a user would.
    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Empties the input matching `css`.
    pub(crate) async fn clear(&self, css: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/clear"),
            Some(json!({})),
        )
        .await;
    }

    /// Clicks the element matching `css`.
    pub(crate) async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// A PNG of the window.
    pub(crate) async fn screenshot(&self) -> Vec<u8> {
        let encoded = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        base64_decode(encoded.as_str().expect("base64 PNG"))
    }
}

impl Drop for Browser {
    /// Ends the session, which closes Chromium (killing chromedriver alone
    /// would leave it running): a plain blocking request, as drop cannot
    /// await.
    fn drop(&mut self) {
        let path = self
            .session
            .split_once("/session/")
            .map(|(_, id)| format!("/session/{id}"))
            .unwrap_or_default();
        if let Ok(mut stream) = TcpStream::connect_timeout(&self.driver, Duration::from_secs(2)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.driver
            );
            // The answer comes once Chromium has quit; its first bytes are
            // enough (chromedriver may keep the connection open after it).
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read(&mut [0u8; 512]);
            }
        }
    }
}

/// Standard base64 (with padding), as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().filter(|&c| c != b'=').collect();
        let mut bits = 0u32;
        for &c in &data {
            bits = bits << 6 | value(c);
        }
        bits <<= 6 * (4 - data.len() as u32);
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..data.len()]);
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8h"), b"hello!");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode(""), b"");
}
