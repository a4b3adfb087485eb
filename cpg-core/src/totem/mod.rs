//! Totem SRP
