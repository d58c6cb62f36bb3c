//! Device identities: the MLS credential identity of every leaf is
//! `<user DID>#<device>`, so the service can tell which user a leaf belongs
//! to and check it against the authenticated caller.

use std::fmt;

use catbird_generated::runtime::Did;

/// Longest device name after the `#`, in bytes.
const MAX_DEVICE_NAME: usize = 64;

/// A parsed `did#device` identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceId {
    did: Did,
    device: String,
}

/// Why a string is not a device identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    #[error("a device identity is `did:...#device`; this one has no `#`")]
    NoSeparator,
    #[error("the DID part of the device identity is invalid: {0}")]
    InvalidDid(String),
    #[error(
        "the device name must be 1 to {MAX_DEVICE_NAME} characters of A-Z, a-z, 0-9, '.', '_', '-', ':'"
    )]
    InvalidName,
}

impl DeviceId {
    /// Parses `did#device`. A DID never contains `#`, so the first one
    /// separates the parts.
    pub fn parse(identity: &str) -> Result<Self, DeviceIdError> {
        let (did, device) = identity.split_once('#').ok_or(DeviceIdError::NoSeparator)?;
        let did = Did::new(did).map_err(|e| DeviceIdError::InvalidDid(e.to_string()))?;
        let valid_name = !device.is_empty()
            && device.len() <= MAX_DEVICE_NAME
            && device
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
        if !valid_name {
            return Err(DeviceIdError::InvalidName);
        }
        Ok(Self {
            did,
            device: device.to_owned(),
        })
    }

    /// Parses a credential identity (raw bytes from an MLS credential).
    pub fn from_credential_identity(identity: &[u8]) -> Result<Self, DeviceIdError> {
        let text = std::str::from_utf8(identity).map_err(|_| DeviceIdError::NoSeparator)?;
        Self::parse(text)
    }

    /// The user the device belongs to.
    pub fn did(&self) -> &Did {
        &self.did
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.did.as_str(), self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_did_and_device() {
        let id = DeviceId::parse("did:plc:abc123#phone-1").unwrap();
        assert_eq!(id.did().as_str(), "did:plc:abc123");
        assert_eq!(id.to_string(), "did:plc:abc123#phone-1");
    }

    #[test]
    fn rejects_what_is_not_a_device() {
        assert_eq!(
            DeviceId::parse("did:plc:abc123"),
            Err(DeviceIdError::NoSeparator)
        );
        assert!(matches!(
            DeviceId::parse("plc:abc#x"),
            Err(DeviceIdError::InvalidDid(_))
        ));
        assert_eq!(
            DeviceId::parse("did:plc:abc#"),
            Err(DeviceIdError::InvalidName)
        );
        assert_eq!(
            DeviceId::parse("did:plc:abc#a#b"),
            Err(DeviceIdError::InvalidName)
        );
        let long = format!("did:plc:abc#{}", "x".repeat(MAX_DEVICE_NAME + 1));
        assert_eq!(DeviceId::parse(&long), Err(DeviceIdError::InvalidName));
        assert!(DeviceId::from_credential_identity(b"\xff#x").is_err());
    }
}
