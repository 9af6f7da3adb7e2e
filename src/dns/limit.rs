//! The slip of response rate limiting (see `crate::limit`): the empty,
//! truncated reply that sends a rate-limited client to TCP.

/// The empty reply that tells a client to ask again over TCP: the query's
/// header and question, with QR and TC set and no records. `None` for a
/// packet whose question cannot be read (it is dropped instead).
pub(crate) fn truncated_reply(query: &[u8], out: &mut Vec<u8>) -> bool {
    if query.len() < 12 || query[2] & 0x80 != 0 || query[4..6] != [0, 1] {
        return false;
    }
    let mut at = 12;
    loop {
        let Some(&len) = query.get(at) else {
            return false;
        };
        if len == 0 {
            at += 1;
            break;
        }
        if len > 63 {
            return false; // a pointer or garbage: nothing to echo
        }
        at += 1 + usize::from(len);
    }
    let end = at + 4;
    if end > query.len() {
        return false;
    }
    out.clear();
    out.extend_from_slice(&query[..end]);
    // QR and TC, the opcode and RD as asked; RA, AD clear, CD as asked,
    // NOERROR; one question, nothing else.
    out[2] = 0x80 | (query[2] & 0x79) | 0x02;
    out[3] = query[3] & 0x10;
    out[6..12].fill(0);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_truncated_reply_echoes_the_question_with_tc() {
        let query = [
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1, 3, b'w', b'e', b'b', 0, 0, 1, 0, 1, 0,
            0, 41, 4, 208, 0, 0, 0, 0, 0, 0,
        ];
        let mut out = Vec::new();
        assert!(truncated_reply(&query, &mut out));
        assert_eq!(
            out,
            [
                0x12, 0x34, 0x83, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'e', b'b', 0, 0, 1, 0, 1
            ]
        );
        assert!(!truncated_reply(&query[..15], &mut out));
        let mut response = query;
        response[2] |= 0x80;
        assert!(!truncated_reply(&response, &mut out));
    }
}
