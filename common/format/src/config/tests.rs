//! The system configuration: defaults, parsing, every validation error.

use super::*;

#[test]
fn empty_file_is_the_2x2x2_demo_on_loopback() {
    let c = SystemConfig::from_toml("", "embedded").expect("valid");
    assert_eq!(c, SystemConfig::default());
    assert_eq!(c.host, "127.0.0.1");
    assert_eq!(
        c.topology,
        Topology {
            boardreaders: 2,
            eventbuilders: 2,
            aggregators: 2,
            monitors: 0
        }
    );
    assert_eq!(c.generator.throttle_us, 100_000);
}

#[test]
fn default_round_trips_through_toml() {
    let c = SystemConfig::default();
    assert_eq!(
        SystemConfig::from_toml(&c.to_toml(), "x").expect("valid"),
        c
    );
}

#[test]
fn unknown_field_is_rejected_with_its_name() {
    let err = SystemConfig::from_toml("[generator]\nthrotle_us = 5\n", "t.toml")
        .expect_err("unknown field");
    let msg = err.to_string();
    assert!(
        msg.contains("throtle_us") && msg.contains("t.toml"),
        "{msg}"
    );
}

#[test]
fn impossible_values_are_rejected_with_the_field() {
    for (text, field) in [
        ("[topology]\nboardreaders = 0", "topology.boardreaders"),
        ("[topology]\neventbuilders = 0", "topology.eventbuilders"),
        (
            "[topology]\naggregators = 0\nmonitors = 1",
            "topology.monitors",
        ),
        ("[generator]\nn_adc_counts = 0", "generator.n_adc_counts"),
        (
            "[generator]\ninitial_sequence_id = 0",
            "generator.initial_sequence_id",
        ),
        (
            "[transfer]\nbatch_max_items = 0",
            "transfer.batch_max_items",
        ),
        (
            "[aggregator]\ndeflate_level = 10",
            "aggregator.deflate_level",
        ),
        (
            "[aggregator]\nformat = \"artdaq-binary\"\ndeflate_level = 1",
            "aggregator.deflate_level",
        ),
        ("[aggregator]\ndirect_io = true", "aggregator.direct_io"),
        ("host = \"localhost:5\"", "host"),
        (
            "[eventbuilder]\nbuffer_bytes = 100",
            "eventbuilder.buffer_bytes",
        ),
        (
            "[eventbuilder]\nbuffer_count = 0",
            "eventbuilder.buffer_count",
        ),
        (
            "[generator]\nn_adc_counts = 100000",
            "eventbuilder.buffer_bytes",
        ),
        (
            "[leak]\ninject_bytes_per_event = 2000000",
            "leak.inject_bytes_per_event",
        ),
    ] {
        let err = SystemConfig::from_toml(text, "x").expect_err(text);
        assert!(err.to_string().contains(field), "{text}: {err}");
    }
    let err = SystemConfig::from_toml("[leak]\ninject_in = \"daqctl\"", "x").expect_err("bad kind");
    assert!(err.to_string().contains("daqctl"), "{err}");
    let err = SystemConfig::from_toml("[generator]\ndistribution = \"poisson\"", "x")
        .expect_err("bad enum");
    assert!(err.to_string().contains("poisson"), "{err}");
    let err =
        SystemConfig::from_toml("[aggregator]\nformat = \"root\"", "x").expect_err("bad enum");
    assert!(err.to_string().contains("root"), "{err}");
}

#[test]
fn data_format_is_named_as_in_the_toml() {
    let c =
        SystemConfig::from_toml("[aggregator]\nformat = \"artdaq-binary\"", "x").expect("valid");
    assert_eq!(c.aggregator.format, DataFormat::ArtdaqBinary);
    assert_eq!(c.aggregator.format.as_str(), "artdaq-binary");
    assert!(c.to_toml().contains("format = \"artdaq-binary\""));
    assert_eq!(SystemConfig::default().aggregator.format, DataFormat::Hdf5);
}

const ADDRESSES_2X1X1: &str = "[topology]\nboardreaders = 2\neventbuilders = 1\naggregators = 1\n";

#[test]
fn an_address_table_naming_every_process_once_is_the_address_book() {
    let text = format!(
        "{ADDRESSES_2X1X1}[addresses]\naggregator-0 = \"10.77.0.31:7000\"\n\
         boardreader-1 = \"br1.daq.svc:7000\"\nboardreader-0 = \"10.77.0.11:7000\"\n\
         eventbuilder-0 = \"[fd00::21]:7000\"\n"
    );
    let c = SystemConfig::from_toml(&text, "x").expect("valid");
    let book = c.address_book().expect("valid").expect("present");
    let names: Vec<String> = book.iter().map(|(id, a)| format!("{id}={a}")).collect();
    assert_eq!(
        names,
        [
            "boardreader-0=10.77.0.11:7000",
            "boardreader-1=br1.daq.svc:7000",
            "eventbuilder-0=[fd00::21]:7000",
            "aggregator-0=10.77.0.31:7000"
        ]
    );
    assert_eq!(
        SystemConfig::from_toml(&c.to_toml(), "y").expect("round trip"),
        c
    );
    assert_eq!(SystemConfig::default().address_book().expect("valid"), None);
}

#[test]
fn a_bad_address_table_is_rejected_naming_the_process() {
    let all = "boardreader-0 = \"10.0.0.1:7000\"\nboardreader-1 = \"10.0.0.2:7000\"\n\
               eventbuilder-0 = \"10.0.0.3:7000\"\naggregator-0 = \"10.0.0.4:7000\"\n";
    for (table, want) in [
        (
            all.replace("aggregator-0 = \"10.0.0.4:7000\"\n", ""),
            "no address for aggregator-0",
        ),
        (
            format!("{all}eventbuilder-1 = \"10.0.0.5:7000\"\n"),
            "eventbuilder-1 is not a process of the topology 2x1x1",
        ),
        (
            format!("{all}reader-3 = \"10.0.0.5:7000\"\n"),
            "\"reader-3\" is not a process name",
        ),
        (
            all.replace("10.0.0.4", "10.0.0.1"),
            "aggregator-0 and boardreader-0 both have the address \"10.0.0.1:7000\"",
        ),
        (
            format!("{all}boardreader-0 = \"10.0.0.9:7000\"\n"),
            "boardreader-0",
        ),
        (
            all.replace("10.0.0.3:7000", "10.0.0.3"),
            "eventbuilder-0 = \"10.0.0.3\": expected host:port",
        ),
        (
            all.replace("10.0.0.3:7000", "10.0.0.3:0"),
            "eventbuilder-0 = \"10.0.0.3:0\"",
        ),
    ] {
        let text = format!("{ADDRESSES_2X1X1}[addresses]\n{table}");
        let err = SystemConfig::from_toml(&text, "x").expect_err(&table);
        assert!(err.to_string().contains(want), "{table}: {err}");
    }
}

mod leak_tests {
    use super::*;

    #[test]
    fn an_injected_leak_applies_to_its_kind_only() {
        let c = SystemConfig::from_toml(
            "[leak]\ninject_bytes_per_event = 64\ninject_in = \"aggregator\"",
            "x",
        )
        .expect("valid");
        assert_eq!(c.leak.bytes_per_event_in(Kind::Aggregator), 64);
        assert_eq!(c.leak.bytes_per_event_in(Kind::EventBuilder), 0);
        assert_eq!(c.leak.bytes_per_event_in(Kind::BoardReader), 0);
        assert_eq!(SystemConfig::default().leak.inject_bytes_per_event, 0);
        assert_eq!(SystemConfig::default().leak.inject_in, Kind::EventBuilder);
    }
}

#[test]
fn keepalive_is_configurable_and_a_timeout_under_two_intervals_is_refused() {
    let c = SystemConfig::from_toml(
        "[transfer]\nkeepalive_interval_ms = 200\nkeepalive_timeout_ms = 800\n",
        "x",
    )
    .expect("valid");
    assert_eq!(
        (
            c.transfer.keepalive_interval_ms,
            c.transfer.keepalive_timeout_ms
        ),
        (200, 800)
    );
    for bad in [
        "[transfer]\nkeepalive_interval_ms = 0\n",
        "[transfer]\nkeepalive_interval_ms = 500\nkeepalive_timeout_ms = 900\n",
    ] {
        let err = SystemConfig::from_toml(bad, "t.toml")
            .expect_err("refused")
            .to_string();
        assert!(err.contains("transfer.keepalive_"), "{err}");
    }
}
