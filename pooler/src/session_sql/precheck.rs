//! The cheap test `effects` runs before lexing a query text: does it contain, where a word can
//! start, one of the words that can change a session? Most queries do not, and this runs on
//! every query a client sends.

/// A cheap test before lexing, one pass over the text: most queries contain none of the words
/// that matter. A word is only looked for where one can start: at an identifier byte (a letter,
/// or a byte of a multi-byte character) after one that is not (`_` counts as a start, for
/// `pg_temp` and `pg_advisory_lock`). Runs on every query a client sends, so the text is read
/// eight bytes at a time: a few arithmetic steps find every word start in the eight, and only
/// those are looked at.
pub(super) fn worth_a_look(text: &[u8]) -> bool {
    // The identifier mask of the byte before the current eight: its 0x80 bit in the top byte.
    let mut before = 0u64;
    let mut chunks = text.chunks_exact(8);
    for (n, chunk) in chunks.by_ref().enumerate() {
        let eight = u64::from_le_bytes(chunk.try_into().expect("chunks of eight"));
        if key_word_starts(text, n * 8, eight, &mut before) {
            return true;
        }
    }
    let tail = chunks.remainder();
    let mut last = [0u8; 8];
    last[..tail.len()].copy_from_slice(tail);
    key_word_starts(text, text.len() - tail.len(), u64::from_le_bytes(last), &mut before)
}

/// Whether a key word starts in the eight bytes `eight` (little-endian, padded with zeros),
/// which are `text[at..at + 8]`; `before` carries the identifier mask from one eight to the next.
#[inline(always)]
fn key_word_starts(text: &[u8], at: usize, eight: u64, before: &mut u64) -> bool {
    let ident = identifier_mask(eight);
    // A byte starts a word when it is an identifier byte and the one before it is not.
    let mut starts = ident & !((ident << 8) | (*before >> 56));
    *before = ident;
    while starts != 0 {
        let i = at + (starts.trailing_zeros() / 8) as usize;
        if BYTE_CLASS[text[i] as usize] & FIRST_LETTER != 0 && second_letter_fits(text, i) && key_word_at(&text[i..]) {
            return true;
        }
        starts &= starts - 1;
    }
    false
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// 0x80 in each byte of `v` that is an identifier byte (an ASCII letter, or 0x80 and above),
/// 0 in the others: the `IDENTIFIER` class of eight bytes at once.
fn identifier_mask(v: u64) -> u64 {
    // Folded to lower case and kept below 0x80, so that adding to a byte never carries into
    // the next one; the high bit of each sum then says whether the byte reached the bound.
    let low = (v | (ONES * 0x20)) & !HIGH_BITS;
    let from_a = low + ONES * (0x80 - u64::from(b'a'));
    let past_z = low + ONES * (0x80 - u64::from(b'z') - 1);
    ((from_a & !past_z) | v) & HIGH_BITS
}

/// Whether the byte after `text[i]` (a key word's first letter) can follow it in a key word:
/// most words that start with one of those letters (`abalance`, `pgbench_accounts`) are
/// turned away here, by one table lookup, before the three-letter comparison.
#[inline(always)]
fn second_letter_fits(text: &[u8], i: usize) -> bool {
    let (Some(&a), Some(&b)) = (text.get(i), text.get(i + 1)) else { return false };
    SECOND_LETTERS[usize::from(a | 0x20) & 31] & (1 << (b & 31)) != 0
}

/// Per first letter (folded to lower case, its low five bits), the set of second letters (low
/// five bits, so either case) that follow it in some key word.
static SECOND_LETTERS: [u32; 32] = {
    let mut t = [0u32; 32];
    let mut i = 0;
    while i < KEY_WORDS.len() {
        let w = KEY_WORDS[i];
        t[(w[0] & 31) as usize] |= 1 << (w[1] & 31);
        i += 1;
    }
    t
};

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

    /// The pre-check a byte at a time, as the table defines it: the reference for the
    /// eight-at-a-time one.
    fn worth_a_look_bytewise(text: &[u8]) -> bool {
        (0..text.len()).any(|i| {
            let class = BYTE_CLASS[text[i] as usize];
            let starts = class & IDENTIFIER != 0 && (i == 0 || BYTE_CLASS[text[i - 1] as usize] & IDENTIFIER == 0);
            starts && class & FIRST_LETTER != 0 && key_word_at(&text[i..])
        })
    }

    #[test]
    fn identifier_mask_matches_the_table_for_every_byte() {
        for b in 0..=255u8 {
            for pos in 0..8 {
                let mut word = [b'1'; 8];
                word[pos] = b;
                let mask = identifier_mask(u64::from_le_bytes(word));
                let expected = if BYTE_CLASS[b as usize] & IDENTIFIER != 0 { 0x80u64 << (pos * 8) } else { 0 };
                assert_eq!(mask, expected, "byte {b:#04x} at {pos}");
            }
        }
    }

    #[test]
    fn eight_at_a_time_agrees_with_byte_at_a_time() {
        const PIECES: [&[u8]; 14] =
            [b"set", b"SeT", b"x", b"_", b"1", b" ", b"\xc3\xa9", b"\xff", b"reset", b"hold", b"tem", b"p", b";", b"@"];
        let mut texts = super::super::random_texts(&PIECES, 12, 0x9e37_79b9_7f4a_7c15);
        for _ in 0..100_000 {
            let text = texts();
            assert_eq!(worth_a_look(&text), worth_a_look_bytewise(&text), "{}", String::from_utf8_lossy(&text));
        }
    }

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
