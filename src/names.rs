//! DNS names in wire form, for the modules below `dns` that need them: the
//! registry builds every instance's SRV target once, at registration, from
//! the zone's wire form.

use hickory_proto::rr::Name;

/// `name` as uncompressed wire bytes, ending with the root label.
pub(crate) fn to_wire(name: &Name) -> Vec<u8> {
    let mut wire = Vec::with_capacity(name.len() + 1);
    for label in name.iter() {
        wire.push(label.len() as u8);
        wire.extend_from_slice(label);
    }
    wire.push(0);
    wire
}
