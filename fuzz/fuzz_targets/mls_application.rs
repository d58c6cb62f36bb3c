#![no_main]
catbird_mls_fuzz::libfuzzer_target!("mls_application");
