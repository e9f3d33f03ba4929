//! What the delivery hook does with one recipient of an inbound message (DESIGN.md §2
//! path 3, COI-PROTOCOL §2.6 and §4.7): where the message goes, and which token it
//! captures. Pure decisions; the hook performs them.

use super::address::{self, NormalizedAddress};
use super::classify::Classification;
use super::config::{MessageFilter, UserConfig};
use super::headers::{HeaderBlock, TOKEN_FIELD};
use super::token::{self, Token};

/// The keyword every chat message of a COI user carries (COI-PROTOCOL §2.6: MUST).
pub const CHAT_KEYWORD: &str = "$Chat";

/// Where one recipient's copy goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Dovecot's LMTP, unchanged: non-COI users and mail that is not chat.
    Lmtp,
    /// The mailbox writer appends it, with `$Chat`.
    Append { mailbox: Folder },
}

/// The folders the hook writes into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Folder {
    Inbox,
    /// `<root><sep>Chats`.
    Chats,
}

/// The route of a message for a user with `config`.
///
/// A COI user's chat message is appended by the writer, so that it has `$Chat` from the
/// first moment a client can see it (an IDLE, the seen filter): to `Chats` with the
/// `active` filter (before it lands anywhere else), to INBOX otherwise. Dovecot's own
/// active mode skips Sieve the same way; for `none` and `seen` this is a difference
/// (Sieve does not run for COI users' chat mail), documented in docs/delivery.md.
pub fn route(config: &UserConfig, classification: &Classification) -> Route {
    if !config.enabled || !classification.chat {
        return Route::Lmtp;
    }
    let mailbox = match config.effective_filter() {
        MessageFilter::Active => Folder::Chats,
        MessageFilter::None | MessageFilter::Seen => Folder::Inbox,
    };
    Route::Append { mailbox }
}

/// The temporary token the sender's server addressed to `recipient`
/// (COI-PROTOCOL §4.7): among the message's `X-COI-Temporary-Token` fields, the first
/// that parses and is bound to `H(recipient ":" sender)`, i.e. lets `recipient` deliver
/// back to `sender`. Its MAC is the sender's server's and cannot be checked here; a
/// forged one is only ever presented back to that server, which refuses it.
///
/// Only the top-level header counts (SECURITY-CASES case 44), and a token already
/// expired or created more than the allowed skew in the future at `now` is ignored.
pub fn captured_token(
    header: &HeaderBlock,
    recipient: &NormalizedAddress,
    sender: &NormalizedAddress,
    now: u64,
) -> Option<Token> {
    let hash = token::pair_hash(Some(recipient), sender);
    header.all(TOKEN_FIELD).find_map(|field| {
        let value = field.unfolded_value();
        let text = std::str::from_utf8(&value).ok()?.trim();
        let token = Token::parse(text).ok()?;
        (token.hash() == hash && token.check_time(now).is_ok()).then_some(token)
    })
}

/// The normalised envelope sender, if it is a mailbox (not `<>`) that normalises.
pub fn sender(path: &str) -> Option<NormalizedAddress> {
    address::normalize_reverse_path(path).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coi::classify::classify;
    use crate::coi::token::{Secret, Secrets, TokenKind};

    const NOW: u64 = 1_700_000_000;

    fn header(text: &str) -> HeaderBlock {
        HeaderBlock::parse_message(text.as_bytes(), 1 << 20)
            .unwrap()
            .0
    }

    fn enabled(filter: MessageFilter) -> UserConfig {
        UserConfig {
            enabled: true,
            message_filter: filter,
        }
    }

    #[test]
    fn only_chat_mail_of_coi_users_leaves_the_lmtp_path() {
        let chat = classify(&header("Chat-Version: 1.0\r\n\r\n"));
        let plain = classify(&header("Subject: hi\r\n\r\n"));
        let off = UserConfig::default();
        assert_eq!(route(&off, &chat), Route::Lmtp);
        assert_eq!(route(&enabled(MessageFilter::Active), &plain), Route::Lmtp);
        assert_eq!(
            route(&enabled(MessageFilter::Active), &chat),
            Route::Append {
                mailbox: Folder::Chats
            }
        );
        for filter in [MessageFilter::None, MessageFilter::Seen] {
            assert_eq!(
                route(&enabled(filter), &chat),
                Route::Append {
                    mailbox: Folder::Inbox
                }
            );
        }
        // A filter stored while COI was off means nothing.
        let stale = UserConfig {
            enabled: false,
            message_filter: MessageFilter::Active,
        };
        assert_eq!(route(&stale, &chat), Route::Lmtp);
    }

    #[test]
    fn the_captured_token_is_the_one_bound_to_this_recipient_and_sender() {
        let secrets = Secrets {
            temporary: vec![Secret::new("sender-side-secret-01").unwrap()],
            permanent: Vec::new(),
        };
        let alice = address::normalize("alice@a.test").unwrap();
        let bob = address::normalize("bob@b.test").unwrap();
        let carol = address::normalize("carol@b.test").unwrap();
        let issue = |to: &NormalizedAddress, created: u64| {
            let hash = token::pair_hash(Some(to), &alice);
            token::issue(TokenKind::Temporary, created, 86_400, &hash, &[], &secrets)
                .unwrap()
                .render()
        };
        let for_bob = issue(&bob, NOW);
        let for_carol = issue(&carol, NOW);
        let text = format!(
            "From: alice@a.test\r\nX-COI-Temporary-Token: garbage\r\nX-COI-Temporary-Token:\r\n {for_carol}\r\nX-COI-Temporary-Token:\r\n {for_bob}\r\n\r\n"
        );
        let block = header(&text);
        assert_eq!(
            captured_token(&block, &bob, &alice, NOW).map(|t| t.render()),
            Some(for_bob.clone())
        );
        assert_eq!(
            captured_token(&block, &carol, &alice, NOW).map(|t| t.render()),
            Some(for_carol)
        );
        // Another sender, another pair: nothing.
        assert!(captured_token(&block, &bob, &carol, NOW).is_none());
        // Expired at capture time: nothing.
        assert!(captured_token(&block, &bob, &alice, NOW + 2 * 86_400).is_none());
        // In the body: nothing (only the top-level header block is given).
        let body_only = header(&format!(
            "From: alice@a.test\r\n\r\nX-COI-Temporary-Token: {for_bob}\r\n"
        ));
        assert!(captured_token(&body_only, &bob, &alice, NOW).is_none());
    }

    #[test]
    fn null_and_malformed_senders_capture_nothing() {
        assert!(sender("").is_none());
        assert!(sender("<>").is_none());
        assert!(sender("not an address").is_none());
        assert_eq!(sender("Alice@A.test").unwrap().as_str(), "alice@a.test");
    }
}
