mod engine;
mod engine_durability;
mod guest;
mod lifecycle;
mod map_ddrescue;
mod map_fuzz;
mod media_blockdev;
mod media_testmode;
