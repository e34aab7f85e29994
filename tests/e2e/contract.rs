//! The SDKs ship copies of the WIT contract; they must not drift from wit/.

use crate::support::repo;

#[test]
fn sdk_wit_copies_match_the_contract() {
    let contract = std::fs::read_to_string(repo().join("wit/sensor.wit")).unwrap();
    for copy in ["sdk-python/attune_sensor/wit/sensor.wit", "sdk-js/wit/sensor.wit"] {
        let text = std::fs::read_to_string(repo().join(copy)).unwrap_or_else(|e| panic!("{copy}: {e}"));
        assert!(text == contract, "{copy} differs from wit/sensor.wit: copy it again");
    }
}
