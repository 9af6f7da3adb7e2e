//! Which instances of a type answer a question, and in which order: the
//! steering rules, written once for DNS answers and `/v1/discover`.
//!
//! - **Candidates** are read from the smallest index of the type that holds
//!   every possible match (not critical, a tag's, an address family's, a
//!   priority's, a locality's); the other conditions are tested per
//!   instance. A set of more than [`LARGE_SET`] is answered from a run
//!   starting at a random candidate, only as many as a message can hold.
//! - **Failover** (A, AAAA, discovery): only the lowest priority that has a
//!   serving instance. **SRV** holds every priority, lowest first.
//! - **Locality**: a client in a known locality gets only its locality's
//!   instances when at least `locality_min_serving` of them serve, else
//!   every instance with its own first (a thin locality is not overloaded).
//! - **Weights**: within a priority (and locality), a weighted random order
//!   (Efraimidis–Spirakis: each instance's key is `ln(u) / weight`, highest
//!   first), so a client taking the first answer spreads its traffic in
//!   proportion to weight; weight 0 comes last (RFC 2782).
//! - **Panic mode**: when fewer than `panic_threshold` percent of a type's
//!   instances are not critical, every unexpired instance counts as
//!   serving: traffic to possibly bad instances beats traffic to none.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::registry::{Members, TypeSet};
use crate::service::{Family, Instance};

/// A set with more candidates than this is answered from a sample: a run
/// from a random candidate, as many as a message could hold, instead of
/// every candidate per question.
pub(crate) const LARGE_SET: usize = 256;

/// How answers are steered: settings from `[dns]`.
#[derive(Debug, Clone)]
pub struct Steering {
    /// Client networks and the locality each is in; the most specific
    /// network containing a client decides.
    pub localities: Vec<(IpNet, String)>,
    /// Serving instances a locality needs before its clients get only it.
    pub locality_min_serving: usize,
    /// Percent of a type's instances that must be not critical, below which
    /// the type is in panic mode; 0 is off.
    pub panic_threshold: u8,
}

impl Default for Steering {
    fn default() -> Steering {
        Steering {
            localities: Vec::new(),
            locality_min_serving: 1,
            panic_threshold: 0,
        }
    }
}

impl Steering {
    /// The locality a client at `ip` is in, if a configured network holds it.
    pub fn locality_of(&self, ip: IpAddr) -> Option<&str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.localities
            .iter()
            .filter(|(network, _)| network.contains(&ip))
            .max_by_key(|(network, _)| network.prefix_len())
            .map(|(_, locality)| locality.as_str())
    }

    /// Whether `set` is in panic mode.
    pub fn panics(&self, set: &TypeSet) -> bool {
        self.panic_threshold > 0
            && set.healthy().len() * 100 < usize::from(self.panic_threshold) * set.len()
    }
}

/// The order a question wants its instances in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// A, AAAA, discovery: the lowest priority that serves, by locality,
    /// then weight.
    Failover,
    /// SRV: every priority, lowest first, each by locality, then weight.
    Priorities,
    /// DNS-SD PTR: every instance, shuffled.
    Shuffled,
}

/// What a question asks of a type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask<'a> {
    pub tag: Option<&'a str>,
    /// A and AAAA ask for instances with an address of one family.
    pub family: Option<Family>,
    pub order: Order,
    /// The client's locality, when known.
    pub locality: Option<&'a str>,
}

/// The instances that answer, in order.
pub(crate) struct Selection<'a> {
    pub instances: Vec<&'a Arc<Instance>>,
    /// Whether the name exists: false when no instance with the tag
    /// serves (NXDOMAIN); with none selected and true, NODATA.
    pub exists: bool,
    /// The type is in panic mode (critical instances count as serving).
    pub panic: bool,
}

/// The instances of `set` that answer `ask` at `now_ms`, at most `most`
/// of a large set.
pub(crate) fn select<'a>(
    set: &'a TypeSet,
    ask: &Ask<'_>,
    steering: &Steering,
    now_ms: u64,
    most: usize,
) -> Selection<'a> {
    let panic = steering.panics(set);
    let live = Live { panic, now_ms };
    let filter = Filter {
        tag: ask.tag,
        family: ask.family,
        priority: None,
        locality: None,
    };
    let several = set.priority_count() > 1;
    let instances = match ask.order {
        // Several priorities: the first that has a live candidate, steered
        // by locality within it.
        Order::Failover if several => set
            .priorities()
            .map(|(priority, _)| {
                let filter = Filter {
                    priority: Some(priority),
                    ..filter
                };
                steered(set, &filter, ask, steering, live, most)
            })
            .find(|found| !found.is_empty())
            .unwrap_or_default(),
        // Every priority, each steered by locality within it.
        Order::Priorities if several => set
            .priorities()
            .flat_map(|(priority, _)| {
                let filter = Filter {
                    priority: Some(priority),
                    ..filter
                };
                steered(set, &filter, ask, steering, live, most)
            })
            .collect(),
        _ => steered(set, &filter, ask, steering, live, most),
    };
    let mut instances = instances;
    let exists = !instances.is_empty() || exists(set, ask.tag, steering, now_ms);
    order(&mut instances, ask);
    Selection {
        instances,
        exists,
        panic,
    }
}

/// Whether any instance of `set` with `tag` serves at `now_ms` (or, in
/// panic mode, is unexpired): whether a name about them exists.
pub(crate) fn exists(set: &TypeSet, tag: Option<&str>, steering: &Steering, now_ms: u64) -> bool {
    let live = Live {
        panic: steering.panics(set),
        now_ms,
    };
    let filter = Filter {
        tag,
        family: None,
        priority: None,
        locality: None,
    };
    Candidates::of(set, &filter, live)
        .is_some_and(|candidates| candidates.read.iter().any(|i| candidates.admits(i)))
}

/// The live candidates of `filter`, steered by locality: a client's own
/// locality only, when enough of it serves; else everything (ordered own
/// first later).
fn steered<'a>(
    set: &'a TypeSet,
    filter: &Filter<'_>,
    ask: &Ask<'_>,
    steering: &Steering,
    live: Live,
    most: usize,
) -> Vec<&'a Arc<Instance>> {
    if let Some(locality) = ask.locality {
        let local = Filter {
            locality: Some(locality),
            ..*filter
        };
        let enough = steering.locality_min_serving.max(1);
        let own = collect(set, &local, live, most);
        if own.len() >= enough {
            return own;
        }
    }
    collect(set, filter, live, most)
}

/// The live candidates of `filter`: every one of a small set, at most
/// `most` of a large one, from a random start.
fn collect<'a>(
    set: &'a TypeSet,
    filter: &Filter<'_>,
    live: Live,
    most: usize,
) -> Vec<&'a Arc<Instance>> {
    let Some(candidates) = Candidates::of(set, filter, live) else {
        return Vec::new();
    };
    let large = candidates.read.len() > LARGE_SET;
    let wanted = if large { most } else { candidates.read.len() };
    let start = if large {
        fastrand::usize(..candidates.read.len())
    } else {
        0
    };
    let mut found = Vec::with_capacity(wanted.min(LARGE_SET));
    for instance in candidates.read.iter_from(start) {
        if found.len() == wanted {
            break;
        }
        if candidates.admits(instance) {
            found.push(instance);
        }
    }
    found
}

/// What counts as serving: the instance's health and lifetime, or in panic
/// mode its lifetime alone.
#[derive(Debug, Clone, Copy)]
struct Live {
    panic: bool,
    now_ms: u64,
}

impl Live {
    #[inline]
    fn admits(self, instance: &Instance) -> bool {
        if self.panic {
            self.now_ms < instance.expires_at_ms()
        } else {
            instance.is_serving(self.now_ms)
        }
    }
}

/// The conditions a candidate must meet besides being live.
#[derive(Debug, Clone, Copy)]
struct Filter<'a> {
    tag: Option<&'a str>,
    family: Option<Family>,
    priority: Option<u16>,
    locality: Option<&'a str>,
}

impl Filter<'_> {
    #[inline]
    fn admits(&self, instance: &Instance) -> bool {
        let spec = &instance.spec;
        self.tag.is_none_or(|t| instance.has_tag(t))
            && self.family.is_none_or(|f| spec.host.family() == Some(f))
            && self.priority.is_none_or(|p| spec.priority == p)
            && self
                .locality
                .is_none_or(|l| spec.locality.as_deref() == Some(l))
    }
}

/// Where the candidates of a filter are read: the smallest index that holds
/// them all, and what is left to test of each.
struct Candidates<'a, 'f> {
    read: &'a Members,
    /// The filter, less what reading `read` already ensures.
    filter: Filter<'f>,
    live: Live,
}

impl<'a, 'f> Candidates<'a, 'f> {
    /// `None` when no instance has the tag, priority or locality asked for.
    fn of(set: &'a TypeSet, filter: &Filter<'f>, live: Live) -> Option<Self> {
        let base = if live.panic { set.all() } else { set.healthy() };
        let tagged = match filter.tag {
            Some(tag) => Some(set.tagged(tag)?),
            None => None,
        };
        let local = match filter.locality {
            Some(locality) => Some(set.in_locality(locality)?),
            None => None,
        };
        let of_priority = match filter.priority {
            Some(priority) => Some(set.of_priority(priority)?),
            None => None,
        };
        let of_family = filter.family.map(|family| set.with_address(family));
        let mut read = base;
        for index in [tagged, local, of_family, of_priority]
            .into_iter()
            .flatten()
        {
            if index.len() < read.len() {
                read = index;
            }
        }
        // Every instance of an index has what the index is of: no need to
        // test it again.
        let read_is = |index: Option<&Members>| index.is_some_and(|i| std::ptr::eq(i, read));
        let filter = Filter {
            tag: filter.tag.filter(|_| !read_is(tagged)),
            family: filter.family.filter(|_| !read_is(of_family)),
            priority: filter.priority.filter(|_| !read_is(of_priority)),
            locality: filter.locality.filter(|_| !read_is(local)),
        };
        Some(Candidates { read, filter, live })
    }

    #[inline]
    fn admits(&self, instance: &Instance) -> bool {
        self.live.admits(instance) && self.filter.admits(instance)
    }
}

/// Puts `instances` in the order `ask` wants: by priority (lowest first),
/// then the client's locality first, then weighted random order; or just
/// shuffled.
fn order(instances: &mut [&Arc<Instance>], ask: &Ask<'_>) {
    if ask.order == Order::Shuffled {
        fastrand::shuffle(instances);
        return;
    }
    let group = |i: &Instance| {
        let remote = ask.locality.is_none() || i.spec.locality.as_deref() != ask.locality;
        (i.spec.priority, remote)
    };
    let one_group = instances.windows(2).all(|w| group(w[0]) == group(w[1]));
    if !one_group {
        instances.sort_unstable_by_key(|i| group(i));
    }
    for run in instances.chunk_by_mut(|a, b| group(a) == group(b)) {
        weighted_shuffle(run);
    }
}

/// A weighted random order: each place goes to one of the instances not
/// yet placed with probability proportional to its weight, so the first is
/// each instance in proportion to its weight; weight 0 only once no
/// weight is left (RFC 2782), in uniform order. All weights equal is a
/// plain shuffle. Sequential draws cost O(n²) integer steps, fewer than
/// Efraimidis–Spirakis' logarithm and sort for the few instances of a
/// usual answer; a long run uses those keys instead (the same
/// distribution).
fn weighted_shuffle(run: &mut [&Arc<Instance>]) {
    let weight = |i: &Instance| u64::from(i.spec.weight);
    let first = run.first().map_or(0, |i| weight(i));
    if first > 0 && run.iter().all(|i| weight(i) == first) {
        fastrand::shuffle(run);
        return;
    }
    if run.len() > SEQUENTIAL_DRAWS {
        run.sort_by_cached_key(|i| WeightedKey::draw(weight(i)));
        return;
    }
    let mut total: u64 = run.iter().map(|i| weight(i)).sum();
    for place in 0..run.len() {
        if total == 0 {
            fastrand::shuffle(&mut run[place..]);
            return;
        }
        let mut draw = fastrand::u64(..total);
        let mut chosen = place;
        for (at, instance) in run.iter().enumerate().skip(place) {
            let w = weight(instance);
            if draw < w {
                chosen = at;
                break;
            }
            draw -= w;
        }
        total -= weight(run[chosen]);
        run.swap(place, chosen);
    }
}

/// Longest run ordered by sequential weighted draws.
const SEQUENTIAL_DRAWS: usize = 32;

/// An Efraimidis–Spirakis key (`-ln(u) / weight`, smallest first; weight 0
/// after every other), as an integer so it sorts without floats.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct WeightedKey {
    zero_weight: bool,
    scaled: u64,
}

impl WeightedKey {
    fn draw(weight: u64) -> WeightedKey {
        // 1 - f64() is in (0, 1], so its logarithm is finite.
        let exponential = -(1.0 - fastrand::f64()).ln();
        let key = exponential / weight.max(1) as f64;
        WeightedKey {
            zero_weight: weight == 0,
            // Keys are below ~37 (the largest -ln of an f64 in (0, 1]).
            scaled: (key * (1u64 << 57) as f64) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hickory_proto::rr::Name;

    use super::*;
    use crate::registry::Registry;
    use crate::service::{Health, ValidRegistration, validate_host};

    struct Fleet {
        registry: Registry,
    }

    impl Fleet {
        fn new() -> Fleet {
            Fleet {
                registry: Registry::new(Name::from_ascii("svc.local.").unwrap()),
            }
        }

        /// Registers `name` of type `web` at 10.0.0.`n` with these traits.
        fn add(
            &self,
            name: &str,
            priority: u16,
            weight: u16,
            locality: Option<&str>,
            health: Health,
        ) {
            let n = self.registry.len() + 1;
            let spec = ValidRegistration {
                name: name.into(),
                service_type: "web".into(),
                host: validate_host(&format!("10.0.{}.{}", n / 250, n % 250 + 1)).unwrap(),
                port: 80,
                tags: vec![],
                metadata: BTreeMap::new(),
                ttl: 60,
                priority,
                weight,
                locality: locality.map(String::from),
                check: None,
            };
            let identity = self.registry.identity_for(&spec);
            self.registry.register(spec, identity, health);
        }

        fn set(&self) -> Arc<TypeSet> {
            self.registry.type_set("web").unwrap()
        }

        /// The names `ask` selects, in order.
        fn select(&self, ask: &Ask<'_>, steering: &Steering) -> (Vec<String>, bool) {
            let set = self.set();
            let now = self.registry.now_ms();
            let selection = select(&set, ask, steering, now, 100);
            let names = selection
                .instances
                .iter()
                .map(|i| i.spec.name.clone())
                .collect();
            (names, selection.panic)
        }
    }

    fn ask(order: Order, locality: Option<&str>) -> Ask<'_> {
        Ask {
            tag: None,
            family: Some(Family::V4),
            order,
            locality,
        }
    }

    fn sorted(mut names: Vec<String>) -> Vec<String> {
        names.sort();
        names
    }

    #[test]
    fn failover_answers_the_lowest_priority_that_serves() {
        let fleet = Fleet::new();
        fleet.add("p1", 0, 1, None, Health::Passing);
        fleet.add("p2", 0, 1, None, Health::Warning);
        fleet.add("b1", 10, 1, None, Health::Passing);
        fleet.add("c1", 20, 1, None, Health::Passing);
        let steering = Steering::default();
        let failover = ask(Order::Failover, None);
        assert_eq!(sorted(fleet.select(&failover, &steering).0), ["p1", "p2"]);
        // The primaries fail one by one: traffic moves at once.
        let id = |name: &str| fleet.set().find(name).unwrap().id;
        fleet
            .registry
            .heartbeat(id("p1"), Health::Critical, None)
            .unwrap();
        assert_eq!(fleet.select(&failover, &steering).0, ["p2"]);
        fleet
            .registry
            .heartbeat(id("p2"), Health::Critical, None)
            .unwrap();
        assert_eq!(fleet.select(&failover, &steering).0, ["b1"]);
        fleet.registry.deregister(id("b1")).unwrap();
        assert_eq!(fleet.select(&failover, &steering).0, ["c1"]);
        // SRV holds every serving priority, lowest first.
        fleet
            .registry
            .heartbeat(id("p1"), Health::Passing, None)
            .unwrap();
        let all = fleet.select(&ask(Order::Priorities, None), &steering).0;
        assert_eq!(all, ["p1", "c1"]);
    }

    #[test]
    fn weights_decide_how_often_an_instance_comes_first() {
        let fleet = Fleet::new();
        fleet.add("heavy", 0, 30, None, Health::Passing);
        fleet.add("middle", 0, 10, None, Health::Passing);
        fleet.add("light", 0, 10, None, Health::Passing);
        fleet.add("never", 0, 0, None, Health::Passing);
        let steering = Steering::default();
        let failover = ask(Order::Failover, None);
        let rounds = 5000;
        let mut first: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..rounds {
            let (names, _) = fleet.select(&failover, &steering);
            assert_eq!(names.len(), 4);
            assert_eq!(names[3], "never", "weight 0 comes last");
            *first.entry(names[0].clone()).or_default() += 1;
        }
        // Expected shares 30/50, 10/50, 10/50. Five standard deviations of a
        // binomial of 5000 draws is at most 5 * sqrt(5000 / 4) ≈ 177.
        for (name, share) in [("heavy", 0.6), ("middle", 0.2), ("light", 0.2)] {
            let expected = share * f64::from(rounds);
            let seen = first.get(name).copied().unwrap_or(0) as f64;
            assert!(
                (seen - expected).abs() < 177.0,
                "{name}: {seen} first of {rounds}, expected {expected}"
            );
        }
        assert!(!first.contains_key("never"));
    }

    #[test]
    fn a_client_gets_its_own_locality_while_enough_of_it_serves() {
        let fleet = Fleet::new();
        fleet.add("eu1", 0, 1, Some("eu"), Health::Passing);
        fleet.add("eu2", 0, 1, Some("eu"), Health::Passing);
        fleet.add("us1", 0, 1, Some("us"), Health::Passing);
        fleet.add("any", 0, 1, None, Health::Passing);
        let steering = Steering {
            locality_min_serving: 2,
            ..Steering::default()
        };
        let from_eu = ask(Order::Failover, Some("eu"));
        assert_eq!(sorted(fleet.select(&from_eu, &steering).0), ["eu1", "eu2"]);
        // Below the minimum: everything, its own first.
        let id = |name: &str| fleet.set().find(name).unwrap().id;
        fleet
            .registry
            .heartbeat(id("eu1"), Health::Critical, None)
            .unwrap();
        for _ in 0..20 {
            let (names, _) = fleet.select(&from_eu, &steering);
            assert_eq!(names[0], "eu2", "{names:?}");
            assert_eq!(sorted(names[1..].to_vec()), ["any", "us1"]);
        }
        // An unknown locality, or none: the normal answer.
        let elsewhere = fleet.select(&ask(Order::Failover, Some("ap")), &steering).0;
        assert_eq!(sorted(elsewhere), ["any", "eu2", "us1"]);
        // Priority comes before locality: a local backup does not beat
        // remote primaries.
        fleet.add("eu-backup", 10, 1, Some("eu"), Health::Passing);
        fleet.add("eu-backup2", 10, 1, Some("eu"), Health::Passing);
        let (names, _) = fleet.select(&from_eu, &steering);
        assert_eq!(sorted(names), ["any", "eu2", "us1"]);
    }

    #[test]
    fn panic_mode_answers_with_critical_instances_below_the_threshold() {
        let fleet = Fleet::new();
        for n in 0..10 {
            let health = if n < 3 {
                Health::Passing
            } else {
                Health::Critical
            };
            fleet.add(&format!("i{n}"), 0, 1, None, health);
        }
        let failover = ask(Order::Failover, None);
        let off = Steering::default();
        let (names, panic) = fleet.select(&failover, &off);
        assert_eq!((names.len(), panic), (3, false));
        let at_50 = Steering {
            panic_threshold: 50,
            ..Steering::default()
        };
        let (names, panic) = fleet.select(&failover, &at_50);
        assert_eq!((names.len(), panic), (10, true), "3 of 10 is below 50 %");
        let at_30 = Steering {
            panic_threshold: 30,
            ..Steering::default()
        };
        assert_eq!(
            fleet.select(&failover, &at_30).0.len(),
            3,
            "30 % is not below 30 %"
        );
    }

    #[test]
    fn localities_come_from_the_most_specific_network() {
        let steering = Steering {
            localities: vec![
                ("10.0.0.0/8".parse().unwrap(), "wide".into()),
                ("10.1.0.0/16".parse().unwrap(), "eu".into()),
                ("fd00:1::/48".parse().unwrap(), "eu6".into()),
            ],
            ..Steering::default()
        };
        let of = |ip: &str| steering.locality_of(ip.parse().unwrap());
        assert_eq!(of("10.1.2.3"), Some("eu"));
        assert_eq!(of("10.2.2.3"), Some("wide"));
        assert_eq!(of("::ffff:10.1.2.3"), Some("eu"));
        assert_eq!(of("fd00:1::5"), Some("eu6"));
        assert_eq!(of("192.0.2.1"), None);
    }
}
