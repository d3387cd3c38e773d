//! Bad input never panics: arbitrary and mutated bytes into the vendor
//! response parsers and the configuration loader give a clean error.

use bansync::config::{Environment, load_with};
use bansync::tencent::api::{
    Api, BlockListResponse, GroupBanListResponse, RoomBanListResponse, VendorResponse,
};
use bansync::tencent::client::check_envelope;
use proptest::prelude::*;

const GROUP: &str = r#"{"ActionStatus":"OK","BannedAccountList":[{"BannedUntil":1660875916,"Member_Account":"brennanli1"}],"ErrorCode":0,"ErrorInfo":"","NextOffset":2}"#;
const ROOM: &str = r#"{"ErrorCode":0,"ErrorInfo":"","ActionStatus":"OK","RequestId":"Id-1","Response":{"BannedAccountList":[{"Member_Account":"user2","BannedUntil":1719300627}],"NextOffset":0}}"#;
const BLOCK: &str = r#"{"BlackListItem":[{"To_Account":"id1","AddBlackTimeStamp":1430000001}],"StartIndex":0,"CurruentSequence":13,"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","ErrorDisplay":""}"#;

fn parse<T: VendorResponse>(api: Api, bytes: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<T>(bytes) {
        let _ = check_envelope(api, v);
    }
}

fn mutate(base: &str, edits: &[(usize, u8)]) -> Vec<u8> {
    let mut b = base.as_bytes().to_vec();
    for (at, byte) in edits {
        let i = at % (b.len() + 1);
        if byte % 3 == 0 && i < b.len() {
            b.remove(i);
        } else if i < b.len() {
            b[i] = *byte;
        } else {
            b.push(*byte);
        }
    }
    b
}

const CONFIG: &str = "[tencent]\nsdkappid = 1400000000\nidentifier = \"admin\"\nsecret_key = \"k\"\nregion = \"china\"\n\n[sources]\nrooms = [\"live-1\"]\n\n[sync]\ninterval = \"5m\"\n\n[[webhook]]\nname = \"w\"\nurl = \"https://example.com/h\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn vendor_parsers_take_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        parse::<GroupBanListResponse>(Api::GroupBanList, &bytes);
        parse::<RoomBanListResponse>(Api::RoomBanList, &bytes);
        parse::<BlockListResponse>(Api::BlockList, &bytes);
    }

    #[test]
    fn vendor_parsers_take_mutated_answers(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        parse::<GroupBanListResponse>(Api::GroupBanList, &mutate(GROUP, &edits));
        parse::<RoomBanListResponse>(Api::RoomBanList, &mutate(ROOM, &edits));
        parse::<BlockListResponse>(Api::BlockList, &mutate(BLOCK, &edits));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_configuration_loader_takes_mutated_files(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, mutate(CONFIG, &edits)).unwrap();
        match load_with(&path, &Environment::default()) {
            Ok(_) => {}
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(!msg.is_empty());
                prop_assert!(!msg.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "no secret in errors: {}", msg);
            }
        }
    }
}

#[test]
fn the_samples_parse() {
    let g: GroupBanListResponse = serde_json::from_str(GROUP).unwrap();
    assert!(check_envelope(Api::GroupBanList, g).is_ok());
    let r: RoomBanListResponse = serde_json::from_str(ROOM).unwrap();
    assert!(check_envelope(Api::RoomBanList, r).is_ok());
    let b: BlockListResponse = serde_json::from_str(BLOCK).unwrap();
    assert!(check_envelope(Api::BlockList, b).is_ok());
}
