//! The zone's name grammar: what the labels left of the apex refer to.
//!
//! Both answer paths read a question's name through [`Node::parse`], so the
//! grammar is written once. The name space (labels left of the zone, any
//! case):
//!
//! | labels                          | node                                   |
//! |---------------------------------|----------------------------------------|
//! | (none)                          | apex: SOA, NS                          |
//! | `type`                          | the type: A, AAAA, SRV                 |
//! | `_tag _sub type`                | the type filtered by tag               |
//! | `name type`                     | one instance: A, AAAA, SRV, TXT        |
//! | `_type _tcp`                    | DNS-SD service: PTR, SRV               |
//! | `_tag _sub _type _tcp`          | DNS-SD subtype: PTR, SRV               |
//! | `name _type _tcp`               | DNS-SD instance: SRV, TXT, A, AAAA     |
//! | `_services _dns-sd _udp`        | DNS-SD browse: PTR to each service     |
//! | `_tcp`, `_udp`, `_dns-sd _udp`  | empty non-terminals (NODATA)           |
//! | `_sub type`, `_sub _type _tcp`  | empty non-terminals while the type serves |
//! | anything else, or deeper than 4 | nothing (NXDOMAIN)                     |
//!
//! Types, names and tags are DNS labels without `_`, so the underscore forms
//! can never collide with them.

/// The deepest name below the apex that can exist (`_tag._sub._type._tcp`).
pub(crate) const MAX_DEPTH: usize = 4;

/// A label copied to lowercase on the stack, so lookups need no allocation.
#[derive(Clone, Copy)]
pub(crate) struct Label {
    bytes: [u8; 63],
    len: u8,
}

impl Label {
    fn new(raw: &[u8]) -> Label {
        let mut bytes = [0u8; 63];
        let len = raw.len().min(63);
        for (out, b) in bytes.iter_mut().zip(raw) {
            *out = b.to_ascii_lowercase();
        }
        Label {
            bytes,
            len: len as u8,
        }
    }

    /// The label as text; invalid UTF-8 can match nothing, so it is "\0"
    /// (which no type, name or tag can be).
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("\u{0}")
    }
}

impl std::fmt::Debug for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// What a name inside the zone refers to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Node {
    Apex,
    /// `<type>`, or `_<tag>._sub.<type>` with the tag.
    Type {
        service_type: Label,
        tag: Option<Label>,
    },
    /// `_<type>._tcp`, or `_<tag>._sub._<type>._tcp` with the tag.
    Service {
        service_type: Label,
        tag: Option<Label>,
    },
    /// `<name>.<type>` or `<name>._<type>._tcp`.
    Instance {
        service_type: Label,
        name: Label,
    },
    /// `_services._dns-sd._udp`: every type that has a serving instance.
    Browse,
    /// `_tcp`, `_udp`, `_dns-sd._udp`: names exist below them.
    EmptyNonTerminal,
    /// `_sub.<type>` or `_sub._<type>._tcp`: exists while the type has a
    /// serving instance (its subtypes may).
    SubtypesOf {
        service_type: Label,
    },
    Missing,
}

impl Node {
    /// Reads `labels`, the labels of a name left of the apex (leftmost
    /// first, in any case). `depth` is how many there are; only the first
    /// [`MAX_DEPTH`] are looked at, since a deeper name cannot exist.
    pub(crate) fn parse<'a>(depth: usize, labels: impl IntoIterator<Item = &'a [u8]>) -> Node {
        if depth > MAX_DEPTH {
            return Node::Missing;
        }
        let mut raw: [&[u8]; MAX_DEPTH] = [&[]; MAX_DEPTH];
        for (slot, label) in raw.iter_mut().zip(labels) {
            *slot = label;
        }
        let is = |at: usize, text: &str| raw[at].eq_ignore_ascii_case(text.as_bytes());
        let plain = |at: usize| raw[at].first() != Some(&b'_');
        // `_<label>` with a non-empty label: a tag or a DNS-SD type.
        let underscored = |at: usize| match raw[at] {
            [b'_', rest @ ..] if !rest.is_empty() => Some(Label::new(rest)),
            _ => None,
        };
        match depth {
            0 => Node::Apex,
            1 if plain(0) => Node::Type {
                service_type: Label::new(raw[0]),
                tag: None,
            },
            1 if is(0, "_tcp") || is(0, "_udp") => Node::EmptyNonTerminal,
            2 if plain(0) && plain(1) => Node::Instance {
                service_type: Label::new(raw[1]),
                name: Label::new(raw[0]),
            },
            2 if is(0, "_dns-sd") && is(1, "_udp") => Node::EmptyNonTerminal,
            2 if is(0, "_sub") && plain(1) => Node::SubtypesOf {
                service_type: Label::new(raw[1]),
            },
            2 if is(1, "_tcp") => match underscored(0) {
                Some(service_type) => Node::Service {
                    service_type,
                    tag: None,
                },
                None => Node::Missing,
            },
            3 if is(0, "_services") && is(1, "_dns-sd") && is(2, "_udp") => Node::Browse,
            3 if is(1, "_sub") && plain(2) => match underscored(0) {
                Some(tag) => Node::Type {
                    service_type: Label::new(raw[2]),
                    tag: Some(tag),
                },
                None => Node::Missing,
            },
            3 if is(0, "_sub") && is(2, "_tcp") => match underscored(1) {
                Some(service_type) => Node::SubtypesOf { service_type },
                None => Node::Missing,
            },
            3 if plain(0) && is(2, "_tcp") => match underscored(1) {
                Some(service_type) => Node::Instance {
                    service_type,
                    name: Label::new(raw[0]),
                },
                None => Node::Missing,
            },
            4 if is(1, "_sub") && is(3, "_tcp") => match (underscored(0), underscored(2)) {
                (Some(tag), Some(service_type)) => Node::Service {
                    service_type,
                    tag: Some(tag),
                },
                _ => Node::Missing,
            },
            _ => Node::Missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str) -> String {
        let labels: Vec<&[u8]> = if name.is_empty() {
            Vec::new()
        } else {
            name.split('.').map(str::as_bytes).collect()
        };
        format!("{:?}", Node::parse(labels.len(), labels))
    }

    #[test]
    fn every_form_of_the_grammar() {
        let table = [
            ("", "Apex"),
            ("web", r#"Type { service_type: "web", tag: None }"#),
            ("WeB", r#"Type { service_type: "web", tag: None }"#),
            (
                "_api._sub.web",
                r#"Type { service_type: "web", tag: Some("api") }"#,
            ),
            (
                "_API._SUB.Web",
                r#"Type { service_type: "web", tag: Some("api") }"#,
            ),
            ("a1.web", r#"Instance { service_type: "web", name: "a1" }"#),
            ("_web._tcp", r#"Service { service_type: "web", tag: None }"#),
            (
                "_api._sub._web._tcp",
                r#"Service { service_type: "web", tag: Some("api") }"#,
            ),
            (
                "a1._web._tcp",
                r#"Instance { service_type: "web", name: "a1" }"#,
            ),
            ("_services._dns-sd._udp", "Browse"),
            ("_tcp", "EmptyNonTerminal"),
            ("_udp", "EmptyNonTerminal"),
            ("_dns-sd._udp", "EmptyNonTerminal"),
            ("_sub.web", r#"SubtypesOf { service_type: "web" }"#),
            ("_sub._web._tcp", r#"SubtypesOf { service_type: "web" }"#),
            // Not in the grammar.
            ("_web", "Missing"),
            ("_._tcp", "Missing"),
            (
                "__._sub.web",
                r#"Type { service_type: "web", tag: Some("_") }"#,
            ),
            ("_._sub.web", "Missing"),
            ("_api._sub._._tcp", "Missing"),
            ("a1._web._udp", "Missing"),
            ("_a1.web", "Missing"),
            ("a1._web", "Missing"),
            ("x.y.z", "Missing"),
            ("a.b.c.d", "Missing"),
            ("a.b.c.d.e", "Missing"),
            ("_a._sub._b._tcp.x", "Missing"),
        ];
        for (name, node) in table {
            assert_eq!(parse(name), node, "{name:?}");
        }
    }

    #[test]
    fn labels_that_are_not_text_match_nothing() {
        let node = Node::parse(1, [&[0xff, 0xfe][..]]);
        let Node::Type { service_type, .. } = node else {
            panic!("{node:?}")
        };
        assert_eq!(service_type.as_str(), "\u{0}");
    }
}
