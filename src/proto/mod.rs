pub mod imap;
pub mod peer;
pub mod sasl;
pub mod smtp;

/// Cuts `input` into consecutive chunks whose sizes cycle through `sizes` (each size
/// byte + 1), for fuzz bodies and tests that check a parser does not depend on how its
/// input is split. An empty `sizes` or `input` gives one chunk.
#[doc(hidden)]
pub fn split_by_sizes<'a>(input: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut at = 0;
    for size in sizes.iter().map(|&s| usize::from(s) + 1).cycle() {
        if at >= input.len() {
            break;
        }
        let end = (at + size).min(input.len());
        chunks.push(&input[at..end]);
        at = end;
    }
    if chunks.is_empty() {
        chunks.push(input);
    }
    chunks
}
