//! Any bytes as a vendor answer: parsing and the envelope check never panic.
#![no_main]

use bansync::tencent::api::{Api, BlockListResponse, GroupBanListResponse, RoomBanListResponse, VendorResponse};
use bansync::tencent::client::check_envelope;
use libfuzzer_sys::fuzz_target;

fn parse<T: VendorResponse>(api: Api, data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<T>(data) {
        let _ = check_envelope(api, v);
    }
}

fuzz_target!(|data: &[u8]| {
    parse::<GroupBanListResponse>(Api::GroupBanList, data);
    parse::<RoomBanListResponse>(Api::RoomBanList, data);
    parse::<BlockListResponse>(Api::BlockList, data);
});
