!> test_module.f90 -- checks of the Fortran module smoothflow against the C core (ctest
!> wrappers.fortran_module).
!>
!>     test_module MODEL START
!>
!> MODEL is the shipped alanine-dipeptide flow, START wrappers/data/ala2_start.txt (its
!> positions only).  Each check prints PASS or FAIL with what it compared; the exit status
!> is the number of failures.  What is held: the library's version equals the bindings'
!> parameters; a missing file gives SF_ERR_IO with a message naming it; the layout of
!> positions(3, N) and forces(3, N) is the core's (forces equal minus fourth-order central
!> differences of the energy); a batch of two equals two single calls (to rounding); sf_error's molecule
!> field names the molecule with a NaN position (the struct's layout); bad shapes are
!> refused with SF_ERR_ARG.
program test_module
    use, intrinsic :: iso_c_binding, only: c_double
    use, intrinsic :: ieee_arithmetic, only: ieee_value, ieee_quiet_nan
    use smoothflow
    implicit none

    character(len=4096) :: model_path, start_path
    character(len=32) :: version
    type(sf_model) :: model
    type(sf_workspace) :: ws
    type(sf_error) :: err
    real(c_double), allocatable :: x(:, :), f(:, :), xb(:, :, :), fb(:, :, :), xp(:, :)
    real(c_double) :: e, eb(2), ep(4), numeric, h, worst
    integer :: failures, n, status, a, c, s
    real(c_double), parameter :: offsets(4) = [-2, -1, 1, 2]

    failures = 0
    if (command_argument_count() /= 2) then
        write (*, '(a)') 'usage: test_module MODEL START'
        stop 2
    end if
    call get_command_argument(1, model_path)
    call get_command_argument(2, start_path)

    write (version, '(i0,".",i0,".",i0)') SF_VERSION_MAJOR, SF_VERSION_MINOR, SF_VERSION_PATCH
    call check(sf_library_version() == trim(version), 'library version ' // sf_library_version() // &
        ' equals the bindings'' ' // trim(version))
    call check(sf_library_version_number() == SF_VERSION_NUMBER, 'sf_library_version_number() = SF_VERSION_NUMBER')
    call check(sf_library_compatible(), 'sf_library_compatible()')

    status = sf_load(model, '/nonexistent/model.safetensors', err)
    call check(status == SF_ERR_IO .and. err%code == SF_ERR_IO .and. &
        index(sf_message(err), '/nonexistent/model.safetensors') > 0 .and. err%molecule == -1, &
        'missing file: SF_ERR_IO naming it (' // sf_message(err) // ')')
    call check(sf_status_text(SF_ERR_IO) == 'cannot read model file', &
        'sf_status_text(SF_ERR_IO) = ' // sf_status_text(SF_ERR_IO))

    status = sf_load(model, trim(model_path), err)
    if (status /= SF_OK) then
        write (*, '(2a)') 'FAIL cannot load the model: ', sf_message(err)
        stop 1
    end if
    n = sf_num_atoms(model)
    call check(n == 22, 'the model has 22 atoms')
    call check(sf_num_dims(model) == 3 * n - 6, 'and 3N - 6 dimensions')
    call check(abs(sf_temperature(model) - 300) < 1e-12_c_double, 'and a temperature of 300 K')
    call check(abs(sf_kT(model) - 0.00831446261815324_c_double * 300) < 1e-12_c_double, 'kT of 300 K')
    call check(sf_new_workspace(ws, model, 2, err) == SF_OK, 'workspace for batches of 2')

    allocate (x(3, n), f(3, n), xb(3, n, 2), fb(3, n, 2), xp(3, n))
    call read_positions(trim(start_path))

    ! forces against fourth-order central differences: catches a transposed layout
    call check(sf_evaluate(model, ws, x, e, f, err=err) == SF_OK, 'evaluate one molecule')
    h = 1e-5_c_double
    worst = 0
    do a = 1, n
        do c = 1, 3
            do s = 1, 4
                xp = x
                xp(c, a) = x(c, a) + h * offsets(s)
                status = sf_evaluate(model, ws, xp, ep(s))
            end do
            numeric = -(ep(1) - 8 * ep(2) + 8 * ep(3) - ep(4)) / (12 * h)
            worst = max(worst, abs(numeric - f(c, a)) / max(1.0_c_double, abs(f(c, a))))
        end do
    end do
    call check(worst < 1e-6_c_double, 'forces(3, N) equal minus the energy''s central differences')

    ! a batch of two: the molecule and a translated copy, each as one call gives
    xb(:, :, 1) = x
    do a = 1, n
        xb(:, a, 2) = x(:, a) + [0.5_c_double, -1.0_c_double, 2.0_c_double]
    end do
    call check(sf_evaluate(model, ws, xb, eb, fb, err=err) == SF_OK, 'evaluate a batch of 2')
    ! equal to rounding only: the conditioners' matrix products order their sums by the batch size
    call check(abs(eb(1) - e) <= 1e-12_c_double * abs(e) .and. maxval(abs(fb(:, :, 1) - f)) <= 1e-10_c_double &
        * maxval(abs(f)), 'batch molecule 0 equals the single call')
    call check(abs(eb(2) - e) <= 1e-10_c_double * abs(e) .and. maxval(abs(fb(:, :, 2) - f)) <= 1e-7_c_double &
        * maxval(abs(f)), 'the translated copy has the same energy and forces')

    ! the error struct: molecule 1 of the batch has a NaN position
    xb(2, 5, 2) = ieee_value(1.0_c_double, ieee_quiet_nan)
    status = sf_evaluate(model, ws, xb, eb, err=err)
    call check(status == SF_ERR_INPUT .and. err%code == SF_ERR_INPUT .and. err%molecule == 1 .and. &
        len(sf_message(err)) > 0, 'NaN in molecule 1: SF_ERR_INPUT, err%molecule = 1 (' // sf_message(err) // ')')

    ! shapes the model does not have
    status = sf_evaluate(model, ws, x(:, 1:n - 1), e, err=err)
    call check(status == SF_ERR_ARG .and. index(sf_message(err), 'shape') > 0, &
        'positions of 21 atoms refused: ' // sf_message(err))
    deallocate (xb)
    allocate (xb(3, n, 3))
    xb = 0
    status = sf_evaluate(model, ws, xb, ep(1:3), err=err)
    call check(status == SF_ERR_ARG .and. index(sf_message(err), 'batch') > 0, &
        'a batch of 3 in a workspace of 2 refused: ' // sf_message(err))

    call sf_free(ws)
    call sf_free(model)
    status = sf_evaluate(model, ws, x, e, err=err)
    call check(status == SF_ERR_ARG, 'evaluation after sf_free refused: ' // sf_message(err))

    write (*, '(i0,a)') failures, ' failures'
    if (failures > 0) stop 1

contains

    subroutine check(ok, what)
        logical, intent(in) :: ok
        character(len=*), intent(in) :: what
        if (ok) then
            write (*, '(2a)') 'PASS ', what
        else
            write (*, '(2a)') 'FAIL ', what
            failures = failures + 1
        end if
    end subroutine check

    !> The positions of the start file (its format: wrappers/fortran/example_md.f90).
    subroutine read_positions(path)
        character(len=*), intent(in) :: path
        character(len=1024) :: line
        real(c_double) :: mass, v(3)
        integer :: unit, ios, count, atom
        open (newunit=unit, file=path, status='old', action='read')
        count = 0
        atom = 0
        do while (atom < n)
            read (unit, '(a)', iostat=ios) line
            if (ios /= 0) exit
            if (line(1:1) == '#' .or. len_trim(line) == 0) cycle
            if (count == 0) then
                read (line, *) count
                cycle
            end if
            atom = atom + 1
            read (line, *) mass, x(:, atom), v
        end do
        close (unit)
        if (count /= n .or. atom /= n) then
            write (*, '(3a)') 'FAIL ', path, ' does not hold the model''s atoms'
            stop 1
        end if
    end subroutine read_positions

end program test_module
