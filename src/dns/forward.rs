//! Forwarding: what is not the zone's to answer (names outside it, reverse
//! names of no serving instance), relayed to upstream nameservers
//! (`dns.forward`), so that signpost can be a host's only nameserver.
//!
//! The threads that answer the zone never wait on an upstream. A UDP thread
//! hands a query to forward ([`super::Handled::Forward`]) to
//! [`Forwarder::udp`], which queues it, with the client's address and the
//! socket to answer from, for the one task [`run`] and returns at once;
//! that task asks the upstreams in a small task per query and sends the
//! client the answer from that socket. A TCP connection, already a task of
//! its own, awaits [`Forwarder::tcp`] inline. Beyond `max_in_flight` queries
//! waiting for upstreams, a query is answered SERVFAIL at once rather than
//! queued without bound.
//!
//! One query to the upstreams: each in turn, starting at the next one for
//! every query (round-robin, so one slow upstream does not take every first
//! try), until one answers within the timeout. Each try is a UDP exchange
//! from a fresh socket on a random ephemeral port, with a random query id;
//! a datagram that is not from that upstream, or not a response with that
//! id and the query's question, is ignored (a spoofing defence), and the
//! wait goes on. A response with TC set is asked again over TCP of the same
//! upstream, with a timeout of its own. When every upstream fails (timeout,
//! error), the client gets SERVFAIL. An upstream's response, whatever its
//! rcode, is relayed as it is, with the client's id back in it; to a UDP
//! client, one longer than the client's payload limit goes as its header
//! and question with TC set, so the client asks again over TCP.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message};
use socket2::{SockAddr, SockRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::answer::{Transport, response_limit};
use crate::metrics::Metrics;

/// The validated `dns.forward*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSettings {
    /// The upstream nameservers, in order; empty when forwarding is off.
    pub upstreams: Vec<SocketAddr>,
    /// How long one upstream has to answer over UDP (and, after a TC
    /// response, as long again over TCP).
    pub timeout: Duration,
    /// Forwarded queries waiting for upstreams at once, at most (1-1000000).
    pub max_in_flight: usize,
}

/// The DNS header's length.
const HEADER: usize = 12;
/// The largest DNS message, over UDP or TCP.
const MAX_MESSAGE: usize = 65535;
/// Header byte 2: QR, the opcode, RD.
const QR: u8 = 0x80;
const OPCODE: u8 = 0x78;
const TC: u8 = 0x02;
const RD: u8 = 0x01;
/// Header byte 3: RA, and the rcode SERVFAIL.
const RA: u8 = 0x80;
const SERVFAIL: u8 = 2;

/// The handle the DNS transports forward through.
pub(crate) struct Forwarder {
    upstreams: Arc<Upstreams>,
    jobs: mpsc::Sender<Job>,
}

/// The forwarder task's end of the [`Forwarder`]'s queue.
pub(crate) struct ForwarderInbox {
    upstreams: Arc<Upstreams>,
    jobs: mpsc::Receiver<Job>,
}

/// The upstreams and what asking them is bounded by.
struct Upstreams {
    addrs: Vec<SocketAddr>,
    timeout: Duration,
    /// Where the next query starts, modulo the number of upstreams.
    next: AtomicUsize,
    /// A permit per query waiting for upstreams.
    in_flight: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

/// A query from a UDP client, to be answered from the socket it came to.
struct Job {
    query: Vec<u8>,
    client: SocketAddr,
    socket: Arc<StdUdpSocket>,
    /// Held until the client has its answer.
    _permit: OwnedSemaphorePermit,
}

impl Forwarder {
    /// A forwarder to the upstreams of `settings` (at least one), and the
    /// inbox [`run`] serves.
    pub(crate) fn new(
        settings: ForwardSettings,
        metrics: Arc<Metrics>,
    ) -> (Forwarder, ForwarderInbox) {
        let upstreams = Arc::new(Upstreams {
            addrs: settings.upstreams,
            timeout: settings.timeout,
            next: AtomicUsize::new(0),
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            metrics,
        });
        // Every queued job holds a permit, so the queue is never full.
        let (jobs, inbox) = mpsc::channel(settings.max_in_flight);
        let forwarder = Forwarder {
            upstreams: upstreams.clone(),
            jobs,
        };
        (
            forwarder,
            ForwarderInbox {
                upstreams,
                jobs: inbox,
            },
        )
    }

    /// Forwards `query` from UDP `client`, to be answered from `socket`;
    /// never waits. False: queued, the forwarder answers. True: answer
    /// `out` now (SERVFAIL: too many queries in flight, or the forwarder
    /// has stopped).
    pub(crate) fn udp(
        &self,
        query: &[u8],
        client: SocketAddr,
        socket: &Arc<StdUdpSocket>,
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(permit) = self.upstreams.permit() else {
            servfail(query, out);
            return true;
        };
        let job = Job {
            query: query.to_vec(),
            client,
            socket: socket.clone(),
            _permit: permit,
        };
        if self.jobs.try_send(job).is_err() {
            // Closed: the server is stopping.
            self.upstreams.metrics.dns_forwarded_failed.inc();
            servfail(query, out);
            return true;
        }
        false
    }

    /// The answer to `query` from a TCP client: an upstream's, else
    /// SERVFAIL (also at once when too many queries are in flight).
    pub(crate) async fn tcp(&self, query: &[u8]) -> Vec<u8> {
        let Some(_permit) = self.upstreams.permit() else {
            let mut out = Vec::new();
            servfail(query, &mut out);
            return out;
        };
        self.upstreams.resolve(query).await
    }
}

/// Answers the queries UDP threads queue until `stop` is cancelled, each in
/// a task of its own (as many as there are permits in flight); those still
/// waiting for upstreams then are dropped with it.
pub(crate) async fn run(inbox: ForwarderInbox, stop: CancellationToken) {
    let ForwarderInbox {
        upstreams,
        mut jobs,
    } = inbox;
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            job = jobs.recv() => match job {
                Some(job) => {
                    running.spawn(answer_udp(upstreams.clone(), job));
                }
                None => return,
            },
            Some(done) = running.join_next() => {
                if done.is_err_and(|error| error.is_panic()) {
                    tracing::error!("forwarding a query panicked; its client gets no answer");
                }
            }
        }
    }
}

/// Asks the upstreams `job`'s query and sends its client the answer.
async fn answer_udp(upstreams: Arc<Upstreams>, job: Job) {
    let mut reply = upstreams.resolve(&job.query).await;
    let limit = response_limit(Transport::Udp, client_payload(&job.query));
    if reply.len() > limit {
        truncate(&mut reply);
        upstreams.metrics.dns_truncated.inc();
    }
    // The UDP thread's socket is blocking: this send must not be.
    let sent = SockRef::from(&*job.socket).send_to_with_flags(
        &reply,
        &SockAddr::from(job.client),
        libc::MSG_DONTWAIT,
    );
    if let Err(error) = sent {
        tracing::debug!(%error, client = %job.client, "cannot send a forwarded answer");
    }
}

impl Upstreams {
    /// A permit for one more query in flight; `None` (counted) when
    /// `max_in_flight` are.
    fn permit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.in_flight.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.metrics.dns_forwarded_refused.inc();
        }
        permit
    }

    /// The upstreams' answer to `query`, with its id; SERVFAIL when none
    /// answered.
    async fn resolve(&self, query: &[u8]) -> Vec<u8> {
        let reply = match question(query) {
            Some(question) => self.exchange(query, question).await,
            None => None,
        };
        match reply {
            Some(mut reply) => {
                reply[..2].copy_from_slice(&query[..2]);
                self.metrics.dns_forwarded_answered.inc();
                reply
            }
            None => {
                self.metrics.dns_forwarded_failed.inc();
                let mut out = Vec::new();
                servfail(query, &mut out);
                out
            }
        }
    }

    /// The first upstream response to `query` (asking `question`), trying
    /// each upstream once, starting at the next one in turn.
    async fn exchange(&self, query: &[u8], question: &[u8]) -> Option<Vec<u8>> {
        let count = self.addrs.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        for n in 0..count {
            let upstream = self.addrs[(first + n) % count];
            match self.ask(upstream, query, question).await {
                Ok(reply) => return Some(reply),
                Err(error) => tracing::debug!(%upstream, %error, "upstream failed"),
            }
        }
        None
    }

    /// One upstream's response to `query`, sent with an id of our own: over
    /// UDP, then over TCP if that was truncated; each within the timeout.
    async fn ask(
        &self,
        upstream: SocketAddr,
        query: &[u8],
        question: &[u8],
    ) -> io::Result<Vec<u8>> {
        let mut sent = query.to_vec();
        sent[..2].copy_from_slice(&fastrand::u16(..).to_be_bytes());
        let reply = tokio::time::timeout(self.timeout, over_udp(upstream, &sent, question))
            .await
            .map_err(|_| timed_out("no answer over udp in time"))??;
        if reply[2] & TC == 0 {
            return Ok(reply);
        }
        tokio::time::timeout(self.timeout, over_tcp(upstream, &sent, question))
            .await
            .map_err(|_| timed_out("no answer over tcp in time"))?
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what)
}

/// `upstream`'s response to `query` over UDP, from a fresh socket on an
/// ephemeral port the kernel picks at random. Waits, ignoring any other
/// datagram, until one answers (the caller bounds the wait).
async fn over_udp(upstream: SocketAddr, query: &[u8], question: &[u8]) -> io::Result<Vec<u8>> {
    let local = match upstream {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected, the socket takes datagrams only from `upstream`, and an
    // upstream whose port is closed fails at once (ICMP) instead of at the
    // timeout.
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buffer = vec![0; MAX_MESSAGE];
    loop {
        let (len, from) = socket.recv_from(&mut buffer).await?;
        if from == upstream && answers(&buffer[..len], query, question) {
            buffer.truncate(len);
            return Ok(buffer);
        }
        tracing::debug!(%upstream, %from, "ignored a datagram that does not answer the query");
    }
}

/// `upstream`'s response to `query` over TCP.
async fn over_tcp(upstream: SocketAddr, query: &[u8], question: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let mut framed = Vec::with_capacity(2 + query.len());
    framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut reply = vec![0; usize::from(len)];
    stream.read_exact(&mut reply).await?;
    if !answers(&reply, query, question) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the tcp response does not answer the query",
        ));
    }
    Ok(reply)
}

/// The question section of `packet` (the name, uncompressed, then type and
/// class), if it has one that can be read.
fn question(packet: &[u8]) -> Option<&[u8]> {
    if packet.get(4..6)? == [0, 0] {
        return None;
    }
    let mut at = HEADER;
    loop {
        let len = usize::from(*packet.get(at)?);
        at += 1;
        match len {
            0 => break,
            // Longer is a compression pointer, which the general path's
            // parser follows but we do not.
            1..=63 => at += len,
            _ => return None,
        }
    }
    packet.get(HEADER..at + 4)
}

/// Whether `reply` is a response to `query` (its id) that repeats the
/// query's `question`: the name in any case (a server may answer in its
/// own), the type and class exactly.
fn answers(reply: &[u8], query: &[u8], question: &[u8]) -> bool {
    let name = question.len() - 4;
    let Some(repeated) = reply.get(HEADER..HEADER + question.len()) else {
        return false;
    };
    reply[..2] == query[..2]
        && reply[2] & QR != 0
        && reply[4..6] == [0, 1]
        && repeated[..name].eq_ignore_ascii_case(&question[..name])
        && repeated[name..] == question[name..]
}

/// The EDNS payload size a query offers, if it has an OPT record.
fn client_payload(query: &[u8]) -> Option<u16> {
    let request = Message::from_vec(query).ok()?;
    request.edns.as_ref().map(Edns::max_payload)
}

/// Cuts a response down to its header and question, with TC set: the
/// client asks again over TCP.
fn truncate(reply: &mut Vec<u8>) {
    let end = question(reply).map_or(HEADER, |question| HEADER + question.len());
    reply.truncate(end);
    reply[2] |= TC;
    let questions = u8::from(end > HEADER);
    reply[4..HEADER].copy_from_slice(&[0, questions, 0, 0, 0, 0, 0, 0]);
}

/// SERVFAIL to `query` into `out`: its id, opcode, RD bit and question.
fn servfail(query: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let question = question(query);
    out.extend_from_slice(&query[..2]);
    out.push(QR | (query[2] & (OPCODE | RD)));
    out.push(RA | SERVFAIL);
    let questions = u8::from(question.is_some());
    out.extend_from_slice(&[0, questions, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(question.unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{DNSClass, Name, RecordType};

    use super::super::{Handled, Responder, ZoneSettings};
    use super::*;
    use crate::registry::Registry;
    use crate::service::{Health, ValidRegistration, validate_host};

    fn query(name: &str, payload: Option<u16>) -> Vec<u8> {
        let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        if let Some(payload) = payload {
            let mut edns = Edns::new();
            edns.set_max_payload(payload);
            message.set_edns(edns);
        }
        message.to_vec().unwrap()
    }

    /// A response to `query` as a server would send it, with the name
    /// spelled `name`.
    fn response(query: &[u8], name: &str) -> Vec<u8> {
        let mut request = Message::from_vec(query).unwrap();
        let mut reply = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
        let asked = request.queries.remove(0);
        reply.add_query(Query::query(
            Name::from_ascii(name).unwrap(),
            asked.query_type(),
        ));
        reply.to_vec().unwrap()
    }

    #[test]
    fn a_response_answers_only_with_the_id_and_the_question() {
        let sent = query("www.Example.test.", None);
        let question = question(&sent).unwrap();
        assert_eq!(question.len(), "www.example.test.".len() + 1 + 4);
        assert!(answers(
            &response(&sent, "WWW.example.TEST."),
            &sent,
            question
        ));
        let mut other_id = response(&sent, "www.example.test.");
        other_id[1] ^= 1;
        assert!(!answers(&other_id, &sent, question));
        let other_name = response(&sent, "www.example.tesu.");
        assert!(!answers(&other_name, &sent, question));
        // Type A (1) against type 33: only the name's case is ignored.
        let mut other_type = response(&sent, "www.example.test.");
        other_type[HEADER + question.len() - 3] = 33;
        assert!(!answers(&other_type, &sent, question));
        // A query is not a response, and a runt answers nothing.
        assert!(!answers(&sent, &sent, question));
        assert!(!answers(&sent[..HEADER], &sent, question));
    }

    #[test]
    fn servfail_repeats_the_id_opcode_rd_and_question() {
        let sent = query("www.example.test.", Some(1232));
        let mut out = vec![1, 2, 3];
        servfail(&sent, &mut out);
        let reply = Message::from_vec(&out).unwrap();
        assert_eq!(reply.metadata.id, 0x1234);
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert!(reply.metadata.recursion_desired);
        assert_eq!(reply.queries.len(), 1);
        assert_eq!(reply.queries[0].name().to_ascii(), "www.example.test.");
        assert!(reply.answers.is_empty() && reply.additionals.is_empty());
    }

    #[test]
    fn truncating_keeps_the_header_and_question_with_tc() {
        let sent = query("big.example.test.", None);
        let mut reply = response(&sent, "big.example.test.");
        reply[7] = 3; // three answers, which we pretend follow
        reply.extend_from_slice(&[0; 600]);
        truncate(&mut reply);
        let cut = Message::from_vec(&reply).unwrap();
        assert!(cut.metadata.truncation);
        assert_eq!(cut.queries.len(), 1);
        assert!(cut.answers.is_empty());
        assert_eq!(reply.len(), HEADER + question(&sent).unwrap().len());
    }

    /// What a responder forwarding to an upstream makes of `name`/`qtype`
    /// in `class`, with an instance serving at 10.0.0.1 and a critical one
    /// at 10.0.0.9.
    fn handled(name: &str, qtype: RecordType, class: DNSClass) -> (Handled, Vec<u8>) {
        let apex = Name::from_ascii("svc.local.").unwrap();
        let registry = Registry::new(apex.clone());
        for (name, host, health) in [
            ("up", "10.0.0.1", Health::Passing),
            ("down", "10.0.0.9", Health::Critical),
        ] {
            let spec = ValidRegistration {
                name: name.into(),
                service_type: "web".into(),
                host: validate_host(host).unwrap(),
                port: 80,
                tags: vec![],
                metadata: Default::default(),
                ttl: 60,
                priority: 1,
                weight: 1,
                locality: None,
                check: None,
            };
            let identity = registry.identity_for(&spec);
            registry.register(spec, identity, health);
        }
        let zone = ZoneSettings {
            apex,
            nameserver: Name::from_ascii("ns.svc.local.").unwrap(),
            nameserver_addresses: vec![
                "192.0.2.53".parse().unwrap(),
                "2001:db8::53".parse().unwrap(),
            ],
            ttl: 5,
            negative_ttl: 5,
            steering: Default::default(),
        };
        let metrics = Arc::new(Metrics::default());
        let settings = ForwardSettings {
            upstreams: vec!["192.0.2.53:53".parse().unwrap()],
            timeout: Duration::from_secs(1),
            max_in_flight: 1,
        };
        let (forwarder, _inbox) = Forwarder::new(settings, metrics.clone());
        let responder = Responder::new(registry, zone, metrics).forwarding_to(forwarder);
        let mut message = Message::new(7, MessageType::Query, OpCode::Query);
        let mut asked = Query::query(Name::from_ascii(name).unwrap(), qtype);
        asked.set_query_class(class);
        message.add_query(asked);
        let packet = message.to_vec().unwrap();
        let client = "127.0.0.1".parse().unwrap();
        let mut out = Vec::new();
        let handled = responder.respond_into(&packet, Transport::Udp, client, &mut out);
        (handled, out)
    }

    #[test]
    fn what_is_not_the_zones_is_forwarded_and_the_zone_never() {
        use RecordType::{A, AXFR, IXFR, PTR, TXT};
        for (name, qtype) in [
            ("www.example.test.", A),
            ("example.test.", TXT),
            ("local.", A),
            // Reverse names of no instance, or of none serving.
            ("2.0.0.10.in-addr.arpa.", PTR),
            ("9.0.0.10.in-addr.arpa.", PTR),
            ("0.0.10.in-addr.arpa.", PTR),
        ] {
            assert_eq!(
                handled(name, qtype, DNSClass::IN).0,
                Handled::Forward,
                "{name}"
            );
        }
        for (name, qtype, class) in [
            ("web.svc.local.", A, DNSClass::IN),
            ("nothing.svc.local.", A, DNSClass::IN),
            ("1.0.0.10.in-addr.arpa.", PTR, DNSClass::IN),
            ("example.test.", AXFR, DNSClass::IN),
            ("example.test.", IXFR, DNSClass::IN),
            ("version.bind.", TXT, DNSClass::CH),
        ] {
            let (handled, out) = handled(name, qtype, class);
            assert_eq!(handled, Handled::Answer, "{name}");
            let rcode = Message::from_vec(&out).unwrap().metadata.response_code;
            let refused = !name.ends_with("svc.local.") && !name.starts_with("1.0.0.10");
            assert_eq!(rcode == ResponseCode::Refused, refused, "{name}: {rcode}");
        }
    }

    #[test]
    fn the_payload_limit_is_the_clients() {
        let limit = |payload| response_limit(Transport::Udp, client_payload(&query("a.", payload)));
        assert_eq!(limit(None), 512);
        assert_eq!(limit(Some(4096)), 1232);
        assert_eq!(limit(Some(100)), 512);
        assert_eq!(limit(Some(800)), 800);
    }
}
