//! knotwork-wire (being written).
