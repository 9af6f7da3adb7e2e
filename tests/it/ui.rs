//! The dashboard (README "Dashboard") in a real browser: headless Chromium
//! opens `/` on a live server and must show what is registered, then every
//! registration, health change, deregistration and expiry as it happens,
//! without reloading; it must stay quick with 10 000 instances, and ask for
//! a token when reads are refused. `webdriver` drives the browser.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Registration, TestServer, id_of};
use crate::webdriver::{Browser, HEIGHT, WIDTH};

/// Every row the page has drawn: id, health, text, the health's colour,
/// the countdown.
const ROWS: &str = "return Array.from(document.querySelectorAll('#rows .row')).map(r => ({
    id: r.dataset.id, health: r.dataset.health, text: r.innerText,
    word: r.querySelector('.health').textContent,
    color: getComputedStyle(r.querySelector('.health')).color,
    expires: r.querySelector('.expires').textContent}));";

/// The types table: `{type: [all, serving, warning, critical]}`.
const TYPES: &str = "const out = {};
    for (const r of document.querySelectorAll('#types tbody tr[data-type]'))
      out[r.dataset.type] = ['instances', 'serving', 'warning', 'critical']
        .map(c => Number(r.querySelector('td.' + c).textContent));
    return out;";

/// How long a change may take to show: generous, for a busy machine.
const LIMIT: Duration = Duration::from_secs(10);

async fn rows(browser: &Browser) -> Vec<Value> {
    browser
        .eval(ROWS, json!([]))
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until the row of `id` satisfies `test`; returns it.
async fn row_where(browser: &Browser, what: &str, id: &str, test: &str) -> Value {
    let script = format!(
        "const r = document.querySelector('#rows .row[data-id=\"' + arguments[0] + '\"]');
         if (!r || !({test})) return null;
         return {{text: r.innerText, health: r.dataset.health,
                  word: r.querySelector('.health').textContent,
                  color: getComputedStyle(r.querySelector('.health')).color,
                  expires: r.querySelector('.expires').textContent}};"
    );
    browser.until(what, LIMIT, &script, json!([id])).await
}

/// Waits until no row of `id` is drawn.
async fn row_gone(browser: &Browser, what: &str, id: &str) {
    browser
        .until(
            what,
            LIMIT,
            "return !document.querySelector('#rows .row[data-id=\"' + arguments[0] + '\"]');",
            json!([id]),
        )
        .await;
}

/// The page is up, has its snapshot and follows the event stream.
async fn live(browser: &Browser) {
    browser
        .until(
            "the page to be live",
            Duration::from_secs(10),
            "return document.querySelector('#connection').dataset.state === 'live';",
            json!([]),
        )
        .await;
}

/// `rgb(r, g, b)` as numbers.
fn rgb(color: &Value) -> [u32; 3] {
    let text = color.as_str().unwrap_or_default();
    let numbers: Vec<u32> = text
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    numbers
        .try_into()
        .unwrap_or_else(|_| panic!("an rgb() colour: {text}"))
}

/// Seconds in a countdown such as `29s` (`None` for minutes or `expired`).
fn seconds(countdown: &Value) -> Option<u32> {
    countdown.as_str()?.strip_suffix('s')?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_change_live_without_reloading() {
    let server = TestServer::start().await;
    let registered = std::time::Instant::now();
    let web_1 = server
        .register(
            &Registration::new("web-1", "web", "10.0.0.5", 8080)
                .tag("api")
                .meta("version", "1.0.0")
                .locality("eu-1")
                .weight(5)
                .ttl(30),
        )
        .await;
    let db_1 = server
        .register(&Registration::new("db-1", "db", "fd00::5", 5432).priority(10))
        .await;
    let (web_1, db_1) = (id_of(&web_1), id_of(&db_1));

    let browser = Browser::start().await;
    browser.goto(&format!("http://{}/", server.admin)).await;
    live(&browser).await;
    let path = browser.eval("return location.pathname;", json!([])).await;
    assert_eq!(path, "/ui", "/ redirects to the dashboard");
    // Set on this document: still there at the end only if it never reloaded.
    browser
        .eval("window.sameDocument = 'yes'; return true;", json!([]))
        .await;

    // What was registered before the page opened: every field it shows.
    let web = row_where(&browser, "web-1's row", &web_1, "true").await;
    let text = web["text"].as_str().unwrap();
    for shown in [
        "web-1",
        ".web",
        "10.0.0.5:8080",
        "p0 w5 @eu-1",
        "api",
        "version=1.0.0",
    ] {
        assert!(
            text.contains(shown),
            "web-1's row shows {shown:?}: {text:?}"
        );
    }
    assert_eq!(web["health"], "passing");
    assert_eq!(
        web["word"], "passing",
        "health is a word, not only a colour"
    );
    let countdown = seconds(&web["expires"]).expect("a countdown in seconds");
    // 30 s less the time since it registered (a browser can take seconds
    // to start on a busy machine), rounded up.
    let waited = registered.elapsed().as_secs() as u32;
    assert!(
        countdown <= 30 && countdown + waited + 1 >= 30,
        "{countdown} s left, {waited} s after registering with a TTL of 30"
    );
    let db = row_where(&browser, "db-1's row", &db_1, "true").await;
    let text = db["text"].as_str().unwrap();
    assert!(
        text.contains("[fd00::5]:5432") && text.contains("p10 w1"),
        "{text:?}"
    );
    let passing = rgb(&db["color"]);
    assert_eq!(
        browser.eval(TYPES, json!([])).await,
        json!({"db": [1, 1, 0, 0], "web": [1, 1, 0, 0]})
    );

    // The countdown counts down by itself.
    let later = row_where(
        &browser,
        "web-1's countdown to go down",
        &web_1,
        &format!("Number(r.querySelector('.expires').textContent.replace('s', '')) < {countdown}"),
    )
    .await;
    assert!(seconds(&later["expires"]).is_some_and(|s| s < countdown));

    // A registration appears.
    let web_2 = id_of(
        &server
            .register(&Registration::new("web-2", "web", "10.0.0.6", 8080).tag("canary"))
            .await,
    );
    let row = row_where(&browser, "web-2 to appear", &web_2, "true").await;
    assert!(row["text"].as_str().unwrap().contains("canary"), "{row}");

    // A health change to critical: the word and the colour.
    let (status, _) = server.heartbeat_reporting(&web_1, "critical").await;
    assert_eq!(status, 200);
    let row = row_where(
        &browser,
        "web-1 to turn critical",
        &web_1,
        "r.dataset.health === 'critical'",
    )
    .await;
    assert_eq!(row["word"], "critical");
    let [red, green, blue] = rgb(&row["color"]);
    assert!(
        red > 150 && green < 100 && blue < 100,
        "critical is red: {}",
        row["color"]
    );
    assert_ne!(rgb(&row["color"]), passing, "critical and passing differ");
    let types = browser
        .until(
            "the types table to count web-1 critical",
            LIMIT,
            &format!("const t = (() => {{ {TYPES} }})(); return t.web && t.web[3] === 1 && t;"),
            json!([]),
        )
        .await;
    assert_eq!(
        types["web"],
        json!([2, 1, 0, 1]),
        "web: 2, 1 serving, 1 critical"
    );

    // A deregistration, and an expiry, remove rows.
    let short = id_of(
        &server
            .register(&Registration::new("short", "web", "10.0.0.9", 80).ttl(2))
            .await,
    );
    row_where(&browser, "short to appear", &short, "true").await;
    assert_eq!(server.deregister(&web_2).await.0, 204);
    row_gone(&browser, "web-2 to disappear", &web_2).await;
    row_gone(&browser, "short to expire", &short).await;
    let log = browser
        .eval(
            "return document.querySelector('#log').innerText;",
            json!([]),
        )
        .await;
    let log = log.as_str().unwrap();
    for line in [
        "deregister web-2.web",
        "expire short.web",
        "health web-1.web",
    ] {
        assert!(log.contains(line), "recent changes say {line:?}: {log}");
    }

    // The filter box.
    browser.type_into("#filter", "db").await;
    browser
        .until(
            "the filter to leave db-1 alone",
            LIMIT,
            "const ids = Array.from(document.querySelectorAll('#rows .row')).map(r => r.dataset.id);
             return ids.length === 1 && ids[0] === arguments[0];",
            json!([db_1]),
        )
        .await;
    let shown = browser
        .eval(
            "return document.querySelector('#shown').textContent;",
            json!([]),
        )
        .await;
    assert_eq!(shown, "1 of 2");
    // Clicking a type filters by it.
    browser.click("#types tbody tr[data-type='web']").await;
    browser
        .until(
            "a click on web to show web-1 alone",
            LIMIT,
            "const ids = Array.from(document.querySelectorAll('#rows .row')).map(r => r.dataset.id);
             return ids.length === 1 && ids[0] === arguments[0]
                 && document.querySelector('#filter').value === 'type:web';",
            json!([web_1]),
        )
        .await;
    // An id is found by its start: what a user pastes from a log line.
    browser.clear("#filter").await;
    browser.type_into("#filter", &db_1[..8]).await;
    browser
        .until(
            "db-1's id to find db-1 alone",
            LIMIT,
            "const ids = Array.from(document.querySelectorAll('#rows .row')).map(r => r.dataset.id);
             return ids.length === 1 && ids[0] === arguments[0];",
            json!([db_1]),
        )
        .await;

    let stats = browser
        .eval(
            "return {same: window.sameDocument, stats: window.signpostStats};",
            json!([]),
        )
        .await;
    assert_eq!(stats["same"], "yes", "the page never reloaded: {stats}");
    assert_eq!(
        stats["stats"]["snapshots"], 1,
        "one snapshot, then events: {stats}"
    );
    assert_eq!(
        stats["stats"]["errors"],
        json!([]),
        "no script errors: {stats}"
    );
    assert!(rows(&browser).await.len() == 1);
}

/// Registers `count` instances of `service_type` (`n<from>`…, five
/// digits), quickly: requests pipelined on a few connections, written back
/// to back and answered in order (README "Connections").
async fn register_lots(server: SocketAddr, service_type: &str, from: usize, count: usize) {
    const CONNECTIONS: usize = 4;
    let mut tasks = tokio::task::JoinSet::new();
    for connection in 0..CONNECTIONS {
        let mut requests = Vec::new();
        let mut sent = 0;
        for n in (from + connection..from + count).step_by(CONNECTIONS) {
            let host = format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
            let body = Registration::new(&format!("n{n:05}"), service_type, &host, 8080)
                .tag(if n % 2 == 0 { "even" } else { "odd" })
                .ttl(300)
                .to_string();
            requests.extend_from_slice(
                format!(
                    "POST /v1/services HTTP/1.1\r\nHost: signpost\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
            sent += 1;
        }
        tasks.spawn(async move {
            let stream = TcpStream::connect(server).await.unwrap();
            let (reader, mut writer) = stream.into_split();
            // The writer is kept until every answer is in: dropping it
            // would half-close the connection, which ends it early.
            let writing =
                tokio::spawn(async move { writer.write_all(&requests).await.map(|()| writer) });
            let mut reader = tokio::io::BufReader::new(reader);
            let mut created = 0;
            let mut line = String::new();
            while created < sent {
                line.clear();
                use tokio::io::AsyncBufReadExt;
                assert!(
                    reader.read_line(&mut line).await.unwrap() > 0,
                    "answers end early"
                );
                // A status line follows the body before it on its line.
                if let Some(at) = line.find("HTTP/1.1 ") {
                    assert!(line[at..].starts_with("HTTP/1.1 201"), "registered: {line}");
                    created += 1;
                }
            }
            drop(writing.await.unwrap().unwrap());
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("registering");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_stays_quick_with_10000_instances() {
    let server = TestServer::start().await;
    register_lots(server.admin, "bulk", 0, 10_000).await;
    let browser = Browser::start().await;
    browser.goto(&format!("http://{}/ui", server.admin)).await;
    live(&browser).await;
    let state = browser
        .until(
            "10 000 instances",
            Duration::from_secs(10),
            "const s = window.signpostStats;
             return document.querySelector('#shown').textContent === '10000' && s;",
            json!([]),
        )
        .await;
    // Only what is in view is drawn.
    let drawn = rows(&browser).await.len();
    assert!((10..=80).contains(&drawn), "{drawn} rows in the DOM");
    assert!(
        state["slowestRenderMs"].as_f64().unwrap() < 500.0,
        "no frame takes long: {state}"
    );

    // The end of the list is a scroll away.
    browser
        .eval(
            "const v = document.querySelector('#viewport'); v.scrollTop = v.scrollHeight; return true;",
            json!([]),
        )
        .await;
    browser
        .until(
            "the last instance in view",
            LIMIT,
            "return !!document.querySelector('#rows .row[data-name=\"n09999\"]');",
            json!([]),
        )
        .await;

    // The filter finds one among 10 000.
    browser.type_into("#filter", "n04242").await;
    browser
        .until(
            "the filter to find n04242",
            LIMIT,
            "const r = document.querySelectorAll('#rows .row');
             return r.length === 1 && r[0].dataset.name === 'n04242';",
            json!([]),
        )
        .await;

    // Changes still arrive: a health change, and a burst of 1000 more.
    let list = server.list("?type=bulk&tag=even").await;
    let one = list.iter().find(|s| s["name"] == "n04242").expect("n04242");
    assert_eq!(
        server.heartbeat_reporting(&id_of(one), "warning").await.0,
        200
    );
    row_where(
        &browser,
        "n04242 warning",
        &id_of(one),
        "r.dataset.health === 'warning'",
    )
    .await;
    register_lots(server.admin, "bulk", 10_000, 1_000).await;
    browser
        .type_into(
            "#filter",
            "\u{E003}\u{E003}\u{E003}\u{E003}\u{E003}\u{E003}",
        )
        .await;
    let state = browser
        .until(
            "11 000 instances",
            Duration::from_secs(10),
            "const s = window.signpostStats;
             return document.querySelector('#shown').textContent === '11000' && s;",
            json!([]),
        )
        .await;
    assert!(
        state["slowestRenderMs"].as_f64().unwrap() < 500.0,
        "no frame takes long: {state}"
    );
    assert_eq!(state["errors"], json!([]), "{state}");
    eprintln!("11 000 instances: {state}");
    let drawn = rows(&browser).await.len();
    assert!((10..=80).contains(&drawn), "{drawn} rows in the DOM");
}

/// A proxy in front of `upstream` that refuses every `/v1/` request
/// without `Authorization: Bearer <token>` (401), as a signpost whose reads
/// need a token would; the page itself it serves to anyone. One request
/// per connection (it adds `Connection: close`), so every request is
/// checked.
async fn token_proxy(upstream: SocketAddr, token: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let authorized = head.lines().any(|line| {
                    line.split_once(':').is_some_and(|(name, value)| {
                        name.eq_ignore_ascii_case("authorization")
                            && value.trim() == format!("Bearer {token}")
                    })
                });
                if target.starts_with("/v1/") && !authorized {
                    let body = r#"{"error":"missing or wrong bearer token"}"#;
                    let reply = format!(
                        "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\
                         www-authenticate: Bearer\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = client.write_all(reply.as_bytes()).await;
                    return;
                }
                let mut rewritten: Vec<&str> = head
                    .trim_end()
                    .lines()
                    .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                    .collect();
                rewritten.push("Connection: close");
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let head = rewritten.join("\r\n") + "\r\n\r\n";
                if server.write_all(head.as_bytes()).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_a_token_when_reads_need_one() {
    let server = TestServer::start().await;
    let web_1 = id_of(
        &server
            .register(&Registration::new("web-1", "web", "10.0.0.5", 8080))
            .await,
    );
    let proxy = token_proxy(server.admin, "letmein").await;
    let browser = Browser::start().await;
    browser.goto(&format!("http://{proxy}/ui")).await;
    browser
        .until(
            "the token box",
            LIMIT,
            "return !document.querySelector('#token-form').hidden
                 && document.querySelector('#connection').dataset.state === 'token';",
            json!([]),
        )
        .await;
    browser.type_into("#token", "wrong").await;
    browser.click("#token-form button").await;
    browser
        .until(
            "the token box again, saying the token was refused",
            LIMIT,
            "const f = document.querySelector('#token-form');
             return !f.hidden && f.innerText.includes('refused');",
            json!([]),
        )
        .await;
    browser.type_into("#token", "letmein").await;
    browser.click("#token-form button").await;
    live(&browser).await;
    row_where(&browser, "web-1 through the proxy", &web_1, "true").await;
    let kept = browser
        .eval(
            "return sessionStorage.getItem('signpost.token');",
            json!([]),
        )
        .await;
    assert_eq!(kept, "letmein", "the token is kept for this tab");
    // The event stream carries the token too: changes arrive.
    let web_2 = id_of(
        &server
            .register(&Registration::new("web-2", "web", "10.0.0.6", 8080))
            .await,
    );
    row_where(&browser, "web-2 live through the proxy", &web_2, "true").await;
    let errors = browser
        .eval("return window.signpostStats.errors;", json!([]))
        .await;
    assert_eq!(errors, json!([]));
}

/// What [`events_proxy`] does with the event streams it relays.
#[derive(Default)]
struct Relay {
    /// Drop every event (counting them) instead of passing it on.
    dropping: bool,
    dropped: usize,
    /// Send a `lagged` event saying how many were dropped, then relay again.
    lag: bool,
    /// Close every event stream, and refuse new ones while set.
    cut: bool,
}

/// A proxy in front of `upstream` whose event streams a test can tamper
/// with ([`Relay`]): it asks signpost over HTTP/1.0, so that the stream
/// comes unchunked, passes it on event by event, and can drop events,
/// report them as a `lagged` event, or cut the connection. Every other
/// request it passes through as it is, one per connection.
async fn events_proxy(
    upstream: SocketAddr,
) -> (SocketAddr, Arc<Mutex<Relay>>, Arc<tokio::sync::Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let relay = Arc::new(Mutex::new(Relay::default()));
    let poke = Arc::new(tokio::sync::Notify::new());
    let (relay_, poke_) = (relay.clone(), poke.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(proxy_one(client, upstream, relay_.clone(), poke_.clone()));
        }
    });
    (addr, relay, poke)
}

async fn proxy_one(
    mut client: TcpStream,
    upstream: SocketAddr,
    relay: Arc<Mutex<Relay>>,
    poke: Arc<tokio::sync::Notify>,
) {
    let Some(head) = read_head(&mut client).await else {
        return;
    };
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
    if !target.starts_with("/v1/events") {
        let mut lines: Vec<&str> = head
            .trim_end()
            .lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
            .collect();
        lines.push("Connection: close");
        let head = lines.join("\r\n") + "\r\n\r\n";
        if server.write_all(head.as_bytes()).await.is_ok() {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
        return;
    }
    if relay.lock().unwrap().cut {
        return;
    }
    let request = format!("GET {target} HTTP/1.0\r\nHost: signpost\r\n\r\n");
    if server.write_all(request.as_bytes()).await.is_err() || read_head(&mut server).await.is_none()
    {
        return;
    }
    let answer = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                  cache-control: no-cache\r\nconnection: close\r\n\r\n";
    if client.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    let mut pending = Vec::new();
    let mut buffer = vec![0u8; 65536];
    loop {
        let read = tokio::select! {
            read = server.read(&mut buffer) => read,
            () = poke.notified() => Ok(usize::MAX),
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(usize::MAX) => {}
            Ok(n) => pending.extend_from_slice(&buffer[..n]),
        }
        let mut out = Vec::new();
        {
            let mut relay = relay.lock().unwrap();
            if relay.cut {
                return;
            }
            while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = pending.drain(..end + 2).collect();
                if relay.dropping && event.starts_with(b"data:") {
                    relay.dropped += 1;
                } else {
                    out.extend_from_slice(&event);
                }
            }
            if relay.lag && !relay.dropping {
                relay.lag = false;
                let missed = std::mem::take(&mut relay.dropped);
                out.extend_from_slice(
                    format!(
                        "data: {{\"type\":\"lagged\",\"timestamp\":0,\"data\":{{\"missed\":{missed}}}}}\n\n"
                    )
                    .as_bytes(),
                );
            }
        }
        if !out.is_empty() && client.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Reads an HTTP head up to its blank line.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).to_string())
}

/// After a `lagged` event, and after the event stream is lost and comes
/// back, the page takes a fresh list: what changed in between shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_resyncs_after_lagged_and_after_a_reconnect() {
    let server = TestServer::start().await;
    let web_1 = id_of(
        &server
            .register(&Registration::new("web-1", "web", "10.0.0.1", 8080))
            .await,
    );
    let (proxy, relay, poke) = events_proxy(server.admin).await;
    let browser = Browser::start().await;
    browser.goto(&format!("http://{proxy}/ui")).await;
    live(&browser).await;
    row_where(&browser, "web-1", &web_1, "true").await;
    let snapshots = "return window.signpostStats.snapshots;";
    assert_eq!(browser.eval(snapshots, json!([])).await, 1);

    // Events lost: the page never sees these two, only a lagged event.
    relay.lock().unwrap().dropping = true;
    let web_2 = id_of(
        &server
            .register(&Registration::new("web-2", "web", "10.0.0.2", 8080))
            .await,
    );
    assert_eq!(server.deregister(&web_1).await.0, 204);
    let deadline = std::time::Instant::now() + LIMIT;
    while relay.lock().unwrap().dropped < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "both events reach the proxy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        browser
            .eval(
                "return !document.querySelector('#rows .row[data-id=\"' + arguments[0] + '\"]');",
                json!([web_2])
            )
            .await
            == true,
        "web-2 is not shown before the lagged event: its event was dropped"
    );
    {
        let mut relay = relay.lock().unwrap();
        relay.dropping = false;
        relay.lag = true;
    }
    poke.notify_waiters();
    row_where(&browser, "web-2 after the resync", &web_2, "true").await;
    row_gone(&browser, "web-1 gone after the resync", &web_1).await;
    assert_eq!(browser.eval(snapshots, json!([])).await, 2);

    // The stream lost, changes meanwhile, the stream back.
    relay.lock().unwrap().cut = true;
    poke.notify_waiters();
    browser
        .until(
            "the page to see the stream gone",
            LIMIT,
            "return document.querySelector('#connection').dataset.state !== 'live';",
            json!([]),
        )
        .await;
    let web_3 = id_of(
        &server
            .register(&Registration::new("web-3", "web", "10.0.0.3", 8080))
            .await,
    );
    assert_eq!(server.heartbeat_reporting(&web_2, "critical").await.0, 200);
    relay.lock().unwrap().cut = false;
    live(&browser).await;
    row_where(&browser, "web-3 after the reconnect", &web_3, "true").await;
    row_where(
        &browser,
        "web-2 critical after the reconnect",
        &web_2,
        "r.dataset.health === 'critical'",
    )
    .await;
    assert_eq!(browser.eval(snapshots, json!([])).await, 3);
    let log = browser
        .eval(
            "return document.querySelector('#log').innerText;",
            json!([]),
        )
        .await;
    assert!(log.as_str().unwrap().contains("lagged"), "{log}");
    let errors = browser
        .eval("return window.signpostStats.errors;", json!([]))
        .await;
    assert_eq!(errors, json!([]));
}

/// The screenshot in docs/ and the README: a small registry with every
/// health, taken through WebDriver at 1200×800. Written to
/// `target/dashboard.png`, or to `$SIGNPOST_SCREENSHOT` when set
/// (`SIGNPOST_SCREENSHOT=$PWD/docs/dashboard.png cargo nextest run
/// the_dashboard_screenshot` refreshes the one in docs/).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_screenshot() {
    let server = TestServer::start().await;
    let fleet = [
        ("web-1", "web", "10.0.1.11", 8080, "passing", "eu-1"),
        ("web-2", "web", "10.0.1.12", 8080, "passing", "eu-1"),
        ("web-3", "web", "10.0.2.13", 8080, "warning", "us-1"),
        ("web-4", "web", "10.0.2.14", 8080, "critical", "us-1"),
        ("api-1", "api", "10.0.1.21", 9000, "passing", "eu-1"),
        ("api-2", "api", "10.0.2.22", 9000, "passing", "us-1"),
        ("db-1", "db", "10.0.1.31", 5432, "passing", "eu-1"),
        ("db-2", "db", "10.0.2.32", 5432, "passing", "us-1"),
        ("cache-1", "cache", "fd00::41", 6379, "passing", "eu-1"),
        ("queue-1", "queue", "10.0.1.51", 5672, "critical", "eu-1"),
    ];
    for (n, (name, service_type, host, port, health, locality)) in fleet.into_iter().enumerate() {
        let mut registration = Registration::new(name, service_type, host, port)
            .locality(locality)
            .meta("version", &format!("1.{}.0", n % 3))
            .ttl([30, 60, 300][n % 3]);
        registration = match service_type {
            "web" => registration
                .tag("http")
                .tag(if n % 2 == 0 { "canary" } else { "stable" }),
            "db" => registration
                .tag("primary")
                .priority(if name == "db-1" { 0 } else { 10 }),
            _ => registration.tag("internal"),
        };
        let id = id_of(&server.register(&registration).await);
        if health != "passing" {
            assert_eq!(server.heartbeat_reporting(&id, health).await.0, 200);
        }
    }
    let browser = Browser::start().await;
    browser.goto(&format!("http://{}/ui", server.admin)).await;
    live(&browser).await;
    // Something under "Recent changes": a new instance, a failing one.
    let web_5 = Registration::new("web-5", "web", "10.0.1.15", 8080)
        .tag("http")
        .tag("canary")
        .locality("eu-1")
        .weight(3)
        .meta("version", "1.3.0");
    let web_5 = id_of(&server.register(&web_5).await);
    let db_2 = server.list("?type=db").await[1].clone();
    assert_eq!(db_2["name"], "db-2");
    let beat = json!({"status": "critical", "output": "connection refused"});
    assert_eq!(server.heartbeat(&id_of(&db_2), Some(beat)).await.0, 200);
    row_where(
        &browser,
        "db-2 critical",
        &id_of(&db_2),
        "r.dataset.health === 'critical'",
    )
    .await;
    row_where(&browser, "web-5", &web_5, "true").await;
    let png = browser.screenshot().await;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (WIDTH, HEIGHT), "the window's size");
    let path = std::env::var("SIGNPOST_SCREENSHOT")
        .unwrap_or_else(|_| format!("{}/dashboard.png", env!("CARGO_TARGET_TMPDIR")));
    std::fs::write(&path, &png).unwrap_or_else(|e| panic!("writing {path}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_built_in_and_fetches_nothing_from_elsewhere() {
    let server = TestServer::start().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = http.get(server.url("/")).send().await.unwrap();
    assert_eq!(root.status().as_u16(), 307);
    assert_eq!(
        root.headers()["location"],
        "ui",
        "relative: works behind a path prefix"
    );
    let slash = http.get(server.url("/ui/")).send().await.unwrap();
    assert_eq!(slash.status().as_u16(), 307);
    assert_eq!(slash.headers()["location"], "../ui");
    for (path, content_type) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
    ] {
        let response = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{path}");
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(
            policy.contains("default-src 'none'") && policy.contains("script-src 'self'"),
            "{path}: only this origin's script: {policy}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let body = response.text().await.unwrap();
        for outside in ["http://", "https://", "//cdn", "@import"] {
            assert!(
                !body.contains(outside),
                "{path} names nothing outside signpost ({outside:?})"
            );
        }
    }
    // Checked against the OpenAPI document like every other response.
    for path in ["/ui", "/ui/app.js", "/ui/app.css"] {
        assert_eq!(server.get(path).await.0, 200, "{path}");
    }
}

/// The page, its files and the API description hold no data: they need no
/// token however the server guards the API, so that the page can load and
/// then ask for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_the_document_need_no_token() {
    let server = TestServer::start_with(|config| config.admin.token = "s3cret".into()).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (path, status) in [
        ("/", 307),
        ("/ui", 200),
        ("/ui/app.js", 200),
        ("/ui/app.css", 200),
        ("/v1/openapi.json", 200),
    ] {
        let response = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path} without a token");
    }
}
