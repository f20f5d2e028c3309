//! placeholder: the packer helper owns this module
