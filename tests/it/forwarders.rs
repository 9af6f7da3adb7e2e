//! The README's forwarder recipes (README "Forwarders"), tested with the
//! real programs: dnsmasq and unbound, each started on a loopback port in
//! front of a live signpost, with the recipe's lines taken from the README
//! as they are (only the port changed), plus what a test needs: where to
//! listen, and no upstream for other names but a UDP socket the test
//! holds, so that nothing ever leaves the machine.
//!
//! Through each: A and SRV answers, NXDOMAIN, no TTL longer than signpost's
//! own answer, a deregistered instance gone within the record TTL, and
//! names outside the zone never sent to signpost.
//!
//! dnsmasq and unbound are installed by `.ci/run` (Debian packages
//! `dnsmasq` and `unbound`); without them these tests fail, never skip.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use tokio::net::UdpSocket;

use crate::support::{Registration, ScratchDir, TestServer, id_of, query_message};

const ZONE: &str = "svc.internal";
/// signpost's `dns.ttl` in these tests: short, so that a change must show
/// through a cache quickly.
const TTL: u32 = 4;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Dnsmasq,
    Unbound,
}

impl Kind {
    fn binary(self) -> (&'static str, &'static str) {
        match self {
            Kind::Dnsmasq => ("/usr/sbin/dnsmasq", "dnsmasq"),
            Kind::Unbound => ("/usr/sbin/unbound", "unbound"),
        }
    }

    /// The README's block for this forwarder: the fenced block whose first
    /// line names its file.
    fn recipe(self) -> String {
        let first = match self {
            Kind::Dnsmasq => "# /etc/dnsmasq.d/signpost.conf",
            Kind::Unbound => "# /etc/unbound/unbound.conf.d/signpost.conf",
        };
        let readme = include_str!("../../README.md");
        let start = readme
            .find(&format!("```\n{first}\n"))
            .unwrap_or_else(|| panic!("README has a block starting {first:?}"))
            + 4;
        let end = start + readme[start..].find("\n```").expect("the block ends");
        readme[start..end].to_string()
    }
}

/// A forwarder running on 127.0.0.1, stopped when dropped.
struct Forwarder {
    addr: SocketAddr,
    dir: ScratchDir,
    process: tokio::process::Child,
}

impl Forwarder {
    /// Starts `kind` with the README's recipe pointed at `signpost`, every
    /// other name sent to `elsewhere`.
    async fn start(kind: Kind, signpost: SocketAddr, elsewhere: SocketAddr) -> Forwarder {
        let (binary, package) = kind.binary();
        assert!(
            std::path::Path::new(binary).exists(),
            "the forwarder recipe tests start the real {package} ({binary}): \
             apt-get install {package} (.ci/run installs it)"
        );
        let dir = ScratchDir::new(package);
        let port = crate::forward::free_port();
        let d = dir.path().display();
        let recipe = kind.recipe();
        let (from, to) = match kind {
            Kind::Dnsmasq => ("127.0.0.1#8600", format!("127.0.0.1#{}", signpost.port())),
            Kind::Unbound => ("127.0.0.1@8600", format!("127.0.0.1@{}", signpost.port())),
        };
        assert!(recipe.contains(from), "the recipe names {from}: {recipe}");
        let recipe = recipe.replace(from, &to);
        let (config, args) = match kind {
            Kind::Dnsmasq => (
                format!(
                    "{recipe}\n# The test's own:\nport={port}\nlisten-address=127.0.0.1\n\
                     bind-interfaces\nno-resolv\nno-hosts\nno-poll\n\
                     server=127.0.0.1#{}\npid-file={d}/dnsmasq.pid\nlog-facility=-\n",
                    elsewhere.port()
                ),
                vec!["--keep-in-foreground".to_string()],
            ),
            Kind::Unbound => (
                format!(
                    "{recipe}\n# The test's own:\nserver:\n    interface: 127.0.0.1\n    \
                     port: {port}\n    do-ip6: no\n    username: \"\"\n    chroot: \"\"\n    \
                     directory: \"{d}\"\n    pidfile: \"{d}/unbound.pid\"\n    \
                     use-syslog: no\n    logfile: \"\"\n    num-threads: 1\n    \
                     so-reuseport: no\n    verbosity: 1\n\
                     forward-zone:\n    name: \".\"\n    forward-addr: 127.0.0.1@{}\n",
                    elsewhere.port()
                ),
                vec!["-d".to_string()],
            ),
        };
        let conf = dir.path().join(format!("{package}.conf"));
        std::fs::write(&conf, config).unwrap();
        let conf_arg = match kind {
            Kind::Dnsmasq => vec![format!("--conf-file={}", conf.display())],
            Kind::Unbound => vec!["-c".to_string(), conf.display().to_string()],
        };
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let process = tokio::process::Command::new(binary)
            .args(args)
            .args(conf_arg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} starts: {e}"));
        let mut forwarder = Forwarder {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            process,
        };
        forwarder.wait_up().await;
        forwarder
    }

    /// Up once it answers the zone's SOA (from signpost).
    async fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply = ask(self.addr, ZONE, RecordType::SOA, Duration::from_millis(300)).await;
            if reply.is_some_and(|r| r.metadata.response_code == ResponseCode::NoError) {
                return;
            }
            let exited = self.process.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "the forwarder did not come up on {} ({exited:?}): {}",
                self.addr,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Asks it (UDP, with EDNS); panics when it does not answer.
    async fn query(&self, name: &str, qtype: RecordType) -> Message {
        ask(self.addr, name, qtype, Duration::from_secs(3))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "no answer to {name} {qtype} through {}: {}",
                    self.addr,
                    self.log()
                )
            })
    }
}

/// One question over UDP from a fresh socket; `None` after `wait`.
async fn ask(server: SocketAddr, name: &str, qtype: RecordType, wait: Duration) -> Option<Message> {
    let request = query_message(&format!("{name}."), qtype, Some(1232));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&request.to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buffer = vec![0; 65535];
    loop {
        let (len, _) = tokio::time::timeout(wait, socket.recv_from(&mut buffer))
            .await
            .ok()?
            .ok()?;
        let reply = Message::from_vec(&buffer[..len]).ok()?;
        if reply.metadata.id == request.metadata.id {
            return Some(reply);
        }
    }
}

fn addresses(reply: &Message) -> BTreeSet<Ipv4Addr> {
    reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// `(target, port)` of every SRV record of the answer.
fn services(reply: &Message) -> BTreeSet<(String, u16)> {
    reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some((srv.target.to_ascii().to_ascii_lowercase(), srv.port)),
            _ => None,
        })
        .collect()
}

/// The longest TTL of the answer section.
fn longest_ttl(reply: &Message) -> u32 {
    reply.answers.iter().map(|r| r.ttl).max().unwrap_or(0)
}

/// Every DNS query signpost has answered so far.
async fn queries_answered(server: &TestServer) -> f64 {
    server
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("signpost_dns_queries_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Everything the README promises of a forwarder recipe.
async fn the_recipe_works(kind: Kind) {
    let server = TestServer::start_with(|config| {
        config.dns.zone = ZONE.into();
        config.dns.ttl = TTL;
    })
    .await;
    let web_1 = Registration::new("web-1", "web", "10.0.0.1", 8080).ttl(60);
    server.register(&web_1).await;
    let web_2 = Registration::new("web-2", "web", "10.0.0.2", 8081).ttl(60);
    let web_2 = id_of(&server.register(&web_2).await);
    let elsewhere = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let forwarder = Forwarder::start(kind, server.dns, elsewhere.local_addr().unwrap()).await;

    // A and SRV.
    let a = forwarder.query("web.svc.internal", RecordType::A).await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError, "{a:?}");
    let both = BTreeSet::from([Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]);
    assert_eq!(addresses(&a), both, "{kind:?}: {a:?}");
    let expected = BTreeSet::from([
        ("web-1.web.svc.internal.".to_string(), 8080),
        ("web-2.web.svc.internal.".to_string(), 8081),
    ]);
    for name in ["_web._tcp.svc.internal", "web.svc.internal"] {
        let srv = forwarder.query(name, RecordType::SRV).await;
        assert_eq!(services(&srv), expected, "{kind:?} {name} SRV: {srv:?}");
    }
    let one = forwarder
        .query("web-1.web.svc.internal", RecordType::A)
        .await;
    assert_eq!(
        addresses(&one),
        BTreeSet::from([Ipv4Addr::new(10, 0, 0, 1)])
    );

    // NXDOMAIN, with the zone's SOA.
    let none = forwarder.query("nothing.svc.internal", RecordType::A).await;
    assert_eq!(
        none.metadata.response_code,
        ResponseCode::NXDomain,
        "{kind:?}: {none:?}"
    );
    assert!(none.answers.is_empty());
    assert!(
        none.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA),
        "{kind:?}: the SOA comes through: {none:?}"
    );

    ttls_are_never_longer_than_signposts(kind, &server, &forwarder).await;
    deregistered_is_gone_within_the_ttl(kind, &server, &forwarder, &web_2).await;
    only_the_zone_reaches_signpost(kind, &server, &forwarder, &elsewhere).await;
}

async fn ttls_are_never_longer_than_signposts(
    kind: Kind,
    server: &TestServer,
    forwarder: &Forwarder,
) {
    // No TTL longer than signpost's own answer, asked just before: for a
    // long-lived instance (dns.ttl), and one about to expire (its
    // remaining lifetime), fresh and from the forwarder's cache.
    let brief = Registration::new("brief", "short", "10.0.0.9", 80).ttl(2);
    server.register(&brief).await;
    for round in 0..2 {
        for (name, qtype) in [
            ("web.svc.internal", RecordType::A),
            ("_web._tcp.svc.internal", RecordType::SRV),
            ("web-1.web.svc.internal", RecordType::A),
            ("short.svc.internal", RecordType::A),
        ] {
            let direct = server.query(&format!("{name}."), qtype).await;
            let through = forwarder.query(name, qtype).await;
            if direct.answers.is_empty() {
                continue; // brief expired in the second round
            }
            let own = direct.answers.iter().map(|r| r.ttl).min().unwrap();
            assert!(own <= TTL);
            if name.starts_with("short") {
                assert!(own <= 2, "capped at brief's remaining lifetime: {own}");
            }
            for record in &through.answers {
                assert!(
                    record.ttl <= own,
                    "{kind:?}, round {round}: {name} {qtype} has TTL {} through the \
                     forwarder, signpost's own answer {own}",
                    record.ttl
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
}

async fn deregistered_is_gone_within_the_ttl(
    kind: Kind,
    server: &TestServer,
    forwarder: &Forwarder,
    web_2: &str,
) {
    let both = BTreeSet::from([Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]);
    // A deregistered instance is gone through the forwarder within the
    // TTL of the answer that held it (plus a second: TTLs are whole
    // seconds, and a cache may count from the start of its second).
    let cached = forwarder.query("web.svc.internal", RecordType::A).await;
    assert_eq!(addresses(&cached), both);
    let record_ttl = longest_ttl(&cached);
    let deregistered = Instant::now();
    assert_eq!(server.deregister(web_2).await.0, 204);
    loop {
        let now = forwarder.query("web.svc.internal", RecordType::A).await;
        if !addresses(&now).contains(&Ipv4Addr::new(10, 0, 0, 2)) {
            assert_eq!(
                addresses(&now),
                BTreeSet::from([Ipv4Addr::new(10, 0, 0, 1)])
            );
            break;
        }
        assert!(
            deregistered.elapsed() <= Duration::from_secs(u64::from(record_ttl) + 1),
            "{kind:?}: web-2 still answered {:?} after deregistration, record TTL {record_ttl}",
            deregistered.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = forwarder
        .query("web-2.web.svc.internal", RecordType::A)
        .await;
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
}

async fn only_the_zone_reaches_signpost(
    kind: Kind,
    server: &TestServer,
    forwarder: &Forwarder,
    elsewhere: &UdpSocket,
) {
    // Only the zone goes to signpost: another name goes to the other
    // upstream, and signpost is not asked.
    let before = queries_answered(server).await;
    let asked = tokio::spawn(ask(
        forwarder.addr,
        "www.example.com",
        RecordType::A,
        Duration::from_secs(2),
    ));
    let mut buffer = vec![0; 65535];
    let (len, _) = tokio::time::timeout(Duration::from_secs(3), elsewhere.recv_from(&mut buffer))
        .await
        .expect("the other name reaches the other upstream")
        .unwrap();
    let query = Message::from_vec(&buffer[..len]).unwrap();
    assert_eq!(
        query.queries[0].name().to_ascii().to_ascii_lowercase(),
        "www.example.com."
    );
    asked.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        queries_answered(server).await,
        before,
        "{kind:?} sent a name outside the zone to signpost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnsmasq_recipe_forwards_only_the_zone_and_keeps_to_signposts_ttls() {
    the_recipe_works(Kind::Dnsmasq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_stub_zone_recipe_forwards_only_the_zone_and_keeps_to_signposts_ttls() {
    the_recipe_works(Kind::Unbound).await;
}
