//! The cheap test `effects` runs before lexing a query text: does it contain, where a word can
//! start, one of the words that can change a session? Most queries do not, and this runs on
//! every query a client sends.

/// A cheap test before lexing, one pass over the text: most queries contain none of the words
/// that matter. A word is only looked for where one can start: after a byte that cannot be
/// inside an identifier (`_` counts as a start, for `pg_temp` and `pg_advisory_lock`). Runs on
/// every query a client sends, so it is a byte loop with a table, not a search per position:
/// the rest of a word is skipped in a tight inner loop.
pub(super) fn worth_a_look(text: &[u8]) -> bool {
    let mut i = 0;
    while i < text.len() {
        let class = BYTE_CLASS[text[i] as usize];
        i += 1;
        if class & IDENTIFIER == 0 {
            continue;
        }
        // A word starts at i - 1.
        if class & FIRST_LETTER != 0 && key_word_at(&text[i - 1..]) {
            return true;
        }
        while i < text.len() && BYTE_CLASS[text[i] as usize] & IDENTIFIER != 0 {
            i += 1;
        }
    }
    false
}

/// The words `worth_a_look` looks for.
const KEY_WORDS: [&[u8]; 9] =
    [b"set", b"reset", b"prepare", b"deallocate", b"discard", b"listen", b"temp", b"advisory", b"hold"];

/// Whether `rest` begins with one of `KEY_WORDS`, in any case. Their first three letters differ,
/// so those (folded to lower case: other bytes may fold into letters, which only costs the full
/// comparison) name the one word to compare.
fn key_word_at(rest: &[u8]) -> bool {
    let [a, b, c, ..] = *rest else { return false };
    let word: &[u8] = match [a | 0x20, b | 0x20, c | 0x20] {
        [b's', b'e', b't'] => b"set",
        [b'r', b'e', b's'] => b"reset",
        [b'p', b'r', b'e'] => b"prepare",
        [b'd', b'e', b'a'] => b"deallocate",
        [b'd', b'i', b's'] => b"discard",
        [b'l', b'i', b's'] => b"listen",
        [b't', b'e', b'm'] => b"temp",
        [b'a', b'd', b'v'] => b"advisory",
        [b'h', b'o', b'l'] => b"hold",
        _ => return false,
    };
    rest.get(..word.len()).is_some_and(|t| t.eq_ignore_ascii_case(word))
}

/// `BYTE_CLASS` bit: no key word can start right after this byte. Letters and the bytes of
/// multi-byte characters, which PostgreSQL reads as part of the same identifier. (Digits, `_`
/// and `$` are left out: a false start costs a comparison, a missed one would hide a SET.)
const IDENTIFIER: u8 = 1;
/// `BYTE_CLASS` bit: the byte begins one of `KEY_WORDS`, in either case.
const FIRST_LETTER: u8 = 2;

/// What `worth_a_look` needs to know about each byte value.
static BYTE_CLASS: [u8; 256] = {
    let mut t = [0; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphabetic() || b >= 0x80 {
            t[c] = IDENTIFIER;
        }
        c += 1;
    }
    let mut i = 0;
    while i < KEY_WORDS.len() {
        let c = KEY_WORDS[i][0];
        t[c as usize] |= FIRST_LETTER;
        t[c.to_ascii_uppercase() as usize] |= FIRST_LETTER;
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_word_is_found_in_any_case() {
        for w in KEY_WORDS {
            let upper = w.to_ascii_uppercase();
            assert!(key_word_at(w) && key_word_at(&upper), "{}", String::from_utf8_lossy(w));
            assert!(worth_a_look(&[b"SELECT 1; ", &upper[..]].concat()));
        }
        assert!(!worth_a_look(b"SELECT abalance FROM pgbench_accounts WHERE aid = 4567;"));
    }
}
