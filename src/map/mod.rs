//! FileMap and the ddrescue mapfile format.
