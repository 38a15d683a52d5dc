//! Placeholder: replaced by the fake CRI server.
