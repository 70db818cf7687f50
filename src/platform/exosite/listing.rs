//! Paging through `GET …/device2/identity/` (exosite-platform.md §5.3): `limit` + `before` =
//! the last item's `created`; `offset` when the platform gives no `created`.

use futures::StreamExt;
use reqwest::Method;

use super::{ExositePlatform, operation, wire};
use crate::platform::IdentityPages;
use crate::platform::error::PlatformError;
use crate::platform::types::{Identity, IdentityPage, ListIdentities};

/// Where the next page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    First,
    Before(i64),
    Offset(u64),
}

struct State {
    platform: ExositePlatform,
    limit: u32,
    cursor: Cursor,
    /// Identities received so far (the offset if the listing falls back to offsets).
    seen: u64,
    done: bool,
}

/// The next cursor after a page, or an error when the platform's cursor does not move.
fn next_cursor(
    cursor: Cursor,
    page: &[Identity],
    seen_after_page: u64,
) -> Result<Cursor, PlatformError> {
    let created: Option<Vec<i64>> = page.iter().map(|i| i.created).collect();
    match (cursor, created) {
        (Cursor::Offset(_), _) | (_, None) => Ok(Cursor::Offset(seen_after_page)),
        (_, Some(created)) => {
            // Newest first: the last item is the oldest; take the minimum to be safe.
            let oldest = created.into_iter().min().unwrap_or(i64::MIN);
            match cursor {
                Cursor::Before(before) if oldest >= before => Err(PlatformError::InvalidResponse {
                    operation: operation::LIST_IDENTITIES,
                    message: format!(
                        "the listing does not move forward: asked for identities created before {before}, got one created at {oldest}"
                    ),
                }),
                _ => Ok(Cursor::Before(oldest)),
            }
        }
    }
}

async fn fetch(state: &mut State) -> Result<Option<IdentityPage>, PlatformError> {
    let p = &state.platform;
    let mut call = p
        .call(
            operation::LIST_IDENTITIES,
            Method::GET,
            p.device2(&["identity"]),
        )
        .trailing_slash()
        .query("limit", state.limit.to_string());
    match state.cursor {
        Cursor::First => {}
        Cursor::Before(b) => call = call.query("before", b.to_string()),
        Cursor::Offset(o) => call = call.query("offset", o.to_string()),
    }
    let answer = p.inner.execute(&call).await?;
    let list: wire::ListWire = wire::parse(operation::LIST_IDENTITIES, &answer.body)?;
    let identities: Vec<Identity> = list.devices.into_iter().map(Into::into).collect();
    if identities.is_empty() {
        state.done = true;
        return Ok(None);
    }
    let more = list
        .may_load_more
        .unwrap_or(identities.len() as u64 >= u64::from(state.limit));
    state.seen += identities.len() as u64;
    if more {
        state.cursor = next_cursor(state.cursor, &identities, state.seen)?;
    } else {
        state.done = true;
    }
    Ok(Some(IdentityPage { identities }))
}

/// The page stream of one listing.
pub(super) fn pages(platform: ExositePlatform, query: ListIdentities) -> IdentityPages {
    let state = State {
        platform,
        limit: query.page_size.clamp(1, 1000),
        cursor: Cursor::First,
        seen: 0,
        done: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        match fetch(&mut state).await {
            Ok(Some(page)) => Some((Ok(page), state)),
            Ok(None) => None,
            Err(e) => {
                state.done = true;
                Some((Err(e), state))
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(created: &[Option<i64>]) -> Vec<Identity> {
        created
            .iter()
            .enumerate()
            .map(|(n, c)| Identity {
                identity: format!("d{n}"),
                created: *c,
                ..Identity::default()
            })
            .collect()
    }

    #[test]
    fn cursor_is_the_oldest_created() {
        let page = ids(&[Some(30), Some(20), Some(10)]);
        assert_eq!(next_cursor(Cursor::First, &page, 3), Ok(Cursor::Before(10)));
        assert_eq!(
            next_cursor(Cursor::Before(31), &page, 6),
            Ok(Cursor::Before(10))
        );
    }

    #[test]
    fn missing_created_falls_back_to_offset_for_good() {
        let page = ids(&[Some(30), None]);
        assert_eq!(next_cursor(Cursor::First, &page, 2), Ok(Cursor::Offset(2)));
        let page = ids(&[Some(5)]);
        assert_eq!(
            next_cursor(Cursor::Offset(2), &page, 3),
            Ok(Cursor::Offset(3))
        );
    }

    #[test]
    fn a_cursor_that_does_not_move_is_an_error() {
        let page = ids(&[Some(30), Some(20)]);
        assert!(matches!(
            next_cursor(Cursor::Before(20), &page, 4),
            Err(PlatformError::InvalidResponse { .. })
        ));
    }
}
